# Production databases that CI may read but never change.

target "prod-db" {
  protocol     = "postgres"
  address      = ["10.0.0.5:5432", "db.internal:5432"]
  upstream_tls = "verify-full"
}

target "replica" {
  protocol      = "postgres"
  address       = ["10.0.1.0/28:5432"]
  resolve_every = "30s"
}

default {
  action = "deny"
  reason = "this job has no policy for this database"
  record = "metadata"
}
