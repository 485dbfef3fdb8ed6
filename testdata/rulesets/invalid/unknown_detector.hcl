# want 9:24 "Unknown detector"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["db"]
  mask {
    detect = ["email", "credit_card"]
  }
}
