test "main branch may select" {
  target   = "prod-db"
  identity = { repository = "acme/api", ref = "refs/heads/main" }
  query    = "SELECT id, email FROM users WHERE id = 42"
  expect   = "mask"
  expect_rule   = "ci-main-readonly/mask/pii"
  expect_record = "full"
}

test "main branch may not update" {
  target      = "prod-db"
  identity    = { repository = "acme/api", ref = "refs/heads/main" }
  query       = "UPDATE users SET admin = true WHERE id = 42"
  expect      = "deny"
  expect_rule = "ci-main-readonly/default"
}

test "drop is denied by the global guard" {
  target      = "prod-db"
  identity    = { repository = "acme/api", ref = "refs/heads/main" }
  query       = "DROP TABLE users"
  expect      = "deny"
  expect_rule = "global-guard/deny/ddl"
}

test "a feature branch gets only the global guard" {
  target      = "prod-db"
  identity    = { repository = "acme/api", ref = "refs/heads/feature-x" }
  query       = "SELECT 1"
  expect      = "allow"
  expect_rule = "global-guard/default"
}

test "unverified identity is locked out" {
  target         = "prod-db"
  identity_level = "unverified"
  process        = { comm = "psql", uid = 1001 }
  query          = "SELECT 1"
  expect         = "deny"
  expect_rule    = "unverified-lockout/default"
}

test "secrets schema is denied even for main" {
  target      = "prod-db"
  identity    = { repository = "acme/api", ref = "refs/heads/main" }
  query       = "SELECT * FROM vault.tokens LIMIT 1"
  expect      = "deny"
  expect_rule = "ci-main-readonly/deny/secrets-schema"
}

test "server files are denied" {
  target      = "prod-db"
  identity    = { repository = "acme/api", ref = "refs/heads/main" }
  query       = "SELECT pg_read_file('/etc/passwd')"
  expect      = "deny"
  expect_rule = "ci-main-readonly/deny/server-files"
}

test "unbounded scan of events is held" {
  target      = "replica"
  identity    = { repository = "acme/api", ref = "refs/heads/main" }
  query       = "SELECT * FROM events"
  expect      = "hold"
  expect_rule = "ci-main-readonly/hold/big-read"
}

test "a large result is held" {
  target      = "prod-db"
  identity    = { repository = "acme/api", ref = "refs/heads/main" }
  query       = "SELECT id FROM orders WHERE created_at > now() - interval '1 year'"
  result      = { rows = 12000 }
  expect      = "hold"
  expect_rule = "ci-main-readonly/hold/big-read"
}

test "reporting allow does not undo the global deny" {
  target      = "replica"
  identity    = { repository = "acme/reports", ref = "refs/heads/nightly" }
  query       = "TRUNCATE events"
  expect      = "deny"
  expect_rule = "global-guard/deny/ddl"
}

test "reporting may insert on the replica" {
  target      = "replica"
  identity    = { repository = "acme/reports", ref = "refs/heads/nightly" }
  query       = "INSERT INTO report_runs (at) VALUES (now())"
  expect      = "allow"
  expect_rule = "reporting/allow/anything-on-replica"
}
