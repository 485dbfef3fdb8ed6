# want 10:36 "Call to unknown function"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["db"]
  deny {
    # The left side is unknown when checked: the call is still found.
    when = sql.kind == "select" && startswith(sql.text, "SELECT")
  }
}
