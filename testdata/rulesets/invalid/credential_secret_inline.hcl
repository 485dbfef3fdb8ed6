# want 7:5 "Secret in the ruleset"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
  credential "app" {
    user     = "app"
    password = "hunter2"
    policies = ["*"]
  }
}
