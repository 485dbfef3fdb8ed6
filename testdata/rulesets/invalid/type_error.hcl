# want 9:37 "Invalid operand"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["db"]
  hold {
    when      = result.rows > 10 && statement.tables
    approvers = ["group:dba"]
  }
}
