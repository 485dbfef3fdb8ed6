# want 6:1 "Unsupported block type"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
polcy "p" {
  targets = ["db"]
}
