# want 8:17 "Unknown variable"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["db"]
  deny { when = statment.kind == "drop" }
}
