# want 8:8 "Missing required argument"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["db"]
  hold {
    when = statement.kind == "copy_out"
  }
}
