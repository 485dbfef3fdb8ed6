# want 4:32 "Invalid address"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432", "10.0.0.300:5432"]
}
