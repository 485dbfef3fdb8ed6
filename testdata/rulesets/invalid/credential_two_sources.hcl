# want 5:3 "One password source"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
  credential "app" {
    user          = "app"
    password_file = "/etc/sluice/secrets/app"
    password_env  = "APP_PASSWORD"
    policies      = ["*"]
  }
}
