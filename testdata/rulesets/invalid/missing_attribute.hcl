# want 2:13 "Missing required argument"
target "db" {
  address = ["10.0.0.5:5432"]
}
