# want 9:21 "Unsupported attribute"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["db"]
  deny {
    when = statement.kinds == "drop"
  }
}
