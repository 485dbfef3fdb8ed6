# A shop's MySQL database (MariaDB in production) that CI jobs test against.

target "shop-db" {
  protocol     = "mysql"
  address      = ["10.0.2.10:3306", "shop-db.internal:3306"]
  upstream_tls = "verify-full"
}

default {
  action = "deny"
  reason = "this job has no policy for this database"
}
