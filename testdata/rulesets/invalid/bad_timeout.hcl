# want 11:17 "Invalid duration"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["db"]
  hold {
    when      = statement.kind == "copy_out"
    approvers = ["group:security"]
    timeout   = "15 minutes"
  }
}
