# want 8:17 "k8s used on a policy without k8s targets"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["db"]
  deny { when = k8s.verb == "delete" && k8s.resource == "namespaces" }
}
