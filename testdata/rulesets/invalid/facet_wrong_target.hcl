# want 13:17 "sql used on a policy without postgres or mysql targets"
target "bastion" {
  protocol = "ssh"
  address  = ["10.0.0.7:22"]
}
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
# The rule belongs in a policy for db: bastion's flows carry no SQL.
policy "p" {
  targets = ["bastion"]
  deny { when = sql.kind == "drop" }
}
