# The migration job of acme/api may change the schema of the app database,
# but only from the protected "migrate" environment, only through the
# migration tool, and never touching data in bulk without a human.

target "app-db" {
  protocol     = "postgres"
  address      = ["10.20.0.10:5432", "app-db.internal:5432"]
  upstream_tls = "verify-ca"
}

target "app-db-ssh" {
  protocol = "ssh"
  address  = ["10.20.0.10:22"]
}

policy "migrations" {
  targets = ["app-db"]
  when = (
    identity.repository == "acme/api" &&
    identity.environment == "migrate" &&
    contains(["migrate", "atlas", "flyway"], process.comm)
  )
  record         = "full"
  default_action = "deny"

  allow "ddl" {
    when = contains(["create", "alter", "drop", "set", "transaction", "select", "insert", "show"], statement.kind)
  }

  allow "bounded-data-fixes" {
    when = contains(["update", "delete"], statement.kind) && statement.has_where
  }

  deny "no-role-changes" {
    when   = contains(["grant", "revoke"], statement.kind)
    reason = "roles are managed in terraform, not in migrations"
  }

  deny "protected-tables" {
    when   = statement.kind == "drop" && any_glob(["users", "billing.*"], statement.tables)
    reason = "users and billing tables are never dropped by a migration"
  }

  hold "truncate" {
    when          = statement.kind == "truncate"
    approvers     = ["group:dba", "user:oncall"]
    min_approvals = 2
    timeout       = "30m"
  }

  hold "wide-update" {
    when      = contains(["update", "delete"], statement.kind) && result.rows > 10000
    approvers = ["group:dba"]
  }
}

# Nobody gets a shell on the database host from CI.
policy "no-ssh" {
  targets        = ["app-db-ssh"]
  default_action = "deny"
}

default { action = "deny" }

test "migrate may add a column" {
  target      = "app-db"
  identity    = { repository = "acme/api", environment = "migrate" }
  process     = { comm = "migrate", uid = 1000 }
  query       = "ALTER TABLE orders ADD COLUMN note text"
  expect      = "allow"
  expect_rule = "migrations/allow/ddl"
  expect_record = "full"
}

test "migrate may drop an old table" {
  target   = "app-db"
  identity = { repository = "acme/api", environment = "migrate" }
  process  = { comm = "flyway" }
  query    = "DROP TABLE legacy_sessions"
  expect   = "allow"
}

test "migrate may not drop users" {
  target      = "app-db"
  identity    = { repository = "acme/api", environment = "migrate" }
  process     = { comm = "migrate" }
  query       = "DROP TABLE users"
  expect      = "deny"
  expect_rule = "migrations/deny/protected-tables"
}

test "migrate may not grant" {
  target      = "app-db"
  identity    = { repository = "acme/api", environment = "migrate" }
  process     = { comm = "migrate" }
  query       = "GRANT ALL ON orders TO intern"
  expect      = "deny"
  expect_rule = "migrations/deny/no-role-changes"
}

test "unqualified delete is denied by default" {
  target      = "app-db"
  identity    = { repository = "acme/api", environment = "migrate" }
  process     = { comm = "migrate" }
  query       = "DELETE FROM sessions"
  expect      = "deny"
  expect_rule = "migrations/default"
}

test "truncate waits for two approvers" {
  target      = "app-db"
  identity    = { repository = "acme/api", environment = "migrate" }
  process     = { comm = "migrate" }
  query       = "TRUNCATE sessions"
  expect      = "hold"
  expect_rule = "migrations/hold/truncate"
}

test "a wide update is held once its row count is known" {
  target      = "app-db"
  identity    = { repository = "acme/api", environment = "migrate" }
  process     = { comm = "migrate" }
  query       = "UPDATE orders SET currency = 'EUR' WHERE currency IS NULL"
  result      = { rows = 250000 }
  expect      = "hold"
  expect_rule = "migrations/hold/wide-update"
}

test "psql in the migrate environment is not the migration tool" {
  target      = "app-db"
  identity    = { repository = "acme/api", environment = "migrate" }
  process     = { comm = "psql" }
  query       = "SELECT 1"
  expect      = "deny"
  expect_rule = "default"
}

test "ssh to the database host is denied" {
  target      = "app-db-ssh"
  identity    = { repository = "acme/api", environment = "migrate" }
  expect      = "deny"
  expect_rule = "no-ssh/default"
}
