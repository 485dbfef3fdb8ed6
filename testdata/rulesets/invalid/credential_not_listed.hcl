# want 14:14 "Credential not granted to this policy"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
  credential "app" {
    user          = "app"
    password_file = "/etc/sluice/secrets/app"
    policies      = ["deploys"]
  }
}
policy "deploys" { targets = ["db"] }
policy "others" {
  targets = ["db"]
  credential "app" {}
}
