# want 9:18 "Invalid regular expression"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["db"]
  deny "odd" {
    when = regex("([a-z]+", statement.text)
  }
}
