# want 8:13 "Call to unknown function"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["db"]
  when    = globb("acme/*", identity.repository)
}
