# want 8:13 "Statement variables not allowed here"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["db"]
  when    = statement.kind == "select"
}
