# want 9:12 "Result variables not allowed here"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["db"]
  allow {
    when = result.rows < 100
  }
}
