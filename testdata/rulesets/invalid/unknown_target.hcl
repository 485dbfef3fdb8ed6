# want 7:14 "Unknown target"
target "prod-db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["prod-dbb"]
}
