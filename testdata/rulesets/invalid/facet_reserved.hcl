# want 8:17 "k8s is reserved"
target "cluster" {
  protocol = "k8s"
  address  = ["10.0.0.8:6443"]
}
policy "p" {
  targets = ["cluster"]
  deny { when = k8s.verb == "delete" }
}
