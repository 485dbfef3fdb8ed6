# want 13:14 "Unknown credential"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
  credential "app" {
    user          = "app"
    password_file = "/etc/sluice/secrets/app"
    policies      = ["*"]
  }
}
policy "p" {
  targets = ["db"]
  credential "ap" {}
}
