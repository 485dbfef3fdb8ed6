# want 9:12 "Condition is not a boolean"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["db"]
  deny {
    when = statement.kind
  }
}
