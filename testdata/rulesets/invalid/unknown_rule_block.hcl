# want 8:3 "Unsupported block type"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["db"]
  denny {
    when = statement.kind == "drop"
  }
}
