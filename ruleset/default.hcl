# Sluice's built-in ruleset. The daemon uses it when its configuration
# names no rules_dir. It intercepts the usual ports on every address,
# refuses destructive SQL, holds bulk exports for a human, masks secrets
# and personal data in results, and records everything.

mode = "enforce"

target "postgres" {
  protocol = "postgres"
  address  = ["*:5432"]
}

target "mysql" {
  protocol = "mysql"
  address  = ["*:3306"]
}

target "ssh" {
  protocol = "ssh"
  address  = ["*:22"]
}

target "kubernetes" {
  protocol = "k8s"
  address  = ["*:6443"]
}

policy "baseline" {
  targets = ["*"]
  record  = "full"

  deny "destructive-sql" {
    when = contains(["postgres", "mysql"], target.protocol) && (
      contains(["drop", "truncate"], statement.kind) ||
      (contains(["delete", "update"], statement.kind) && !statement.has_where)
    )
    reason = "destructive statements (DROP, TRUNCATE, DELETE or UPDATE without WHERE) are not allowed from CI"
  }

  hold "bulk-export" {
    when = contains(["postgres", "mysql"], target.protocol) && (
      statement.kind == "copy_out" || result.rows > 10000
    )
    approvers = ["group:security"]
    timeout   = "15m"
    reason    = "bulk exports need a security approver"
  }

  mask "secrets-and-personal-data" {
    detect = ["secret", "jwt", "card_number", "iban", "ssn", "email", "phone"]
    using  = "redact"
  }
}

# No flow reaches this, since baseline covers every target, but a ruleset
# always says what happens to the unmatched.
default {
  action = "deny"
  record = "full"
}

test "default denies DROP TABLE" {
  target      = "postgres"
  statement   = { kind = "drop", tables = ["users"] }
  expect      = "deny"
  expect_rule = "baseline/deny/destructive-sql"
}

test "default denies DELETE without WHERE" {
  target      = "mysql"
  statement   = { kind = "delete", tables = ["orders"], has_where = false }
  expect      = "deny"
  expect_rule = "baseline/deny/destructive-sql"
}

test "default holds COPY TO STDOUT" {
  target      = "postgres"
  statement   = { kind = "copy_out", tables = ["users"] }
  expect      = "hold"
  expect_rule = "baseline/hold/bulk-export"
}

test "default holds a large result" {
  target      = "postgres"
  statement   = { kind = "select", tables = ["events"] }
  result      = { rows = 50000 }
  expect      = "hold"
  expect_rule = "baseline/hold/bulk-export"
}

test "default masks an ordinary SELECT" {
  target      = "postgres"
  statement   = { kind = "select", tables = ["users"], has_where = true }
  expect      = "mask"
  expect_rule = "baseline/mask/secrets-and-personal-data"
}
