# want 8:27 "Invalid CIDR"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.0/8:5432"]
}
policy "p" {
  targets = ["db"]
  when    = cidr_contains("10.0.0.0/33", target.ip)
}
