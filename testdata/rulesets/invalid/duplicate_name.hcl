# want 7:8 "Duplicate target name"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}

target "db" {
  protocol = "mysql"
  address  = ["10.0.0.6:3306"]
}
