# want 8:13 "Invalid value for record"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["db"]
  record  = "everything"
}
