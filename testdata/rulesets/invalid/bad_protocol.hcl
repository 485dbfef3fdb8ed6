# want 3:14 "Invalid value for protocol"
target "db" {
  protocol = "postgresql"
  address  = ["10.0.0.5:5432"]
}
