# A new ruleset being rolled out in monitor mode: every verdict is computed,
# logged and recorded, but nothing is blocked, masked or held yet. Tests
# still check the verdicts that would apply once mode is "enforce".

mode = "monitor"

target "warehouse" {
  protocol = "postgres"
  address  = ["10.30.0.0/24:5432"]
}

target "orders-mysql" {
  protocol = "mysql"
  address  = ["10.30.1.7:3306"]
}

target "cluster" {
  protocol     = "k8s"
  address      = ["k8s.internal:6443"]
  upstream_tls = "verify-full"
}

policy "ci-everything" {
  targets = ["*"]
  when    = identity.level == "oidc" && glob("acme/*", identity.repository)
  record  = "commands"

  deny "exports-from-prs" {
    when   = glob("refs/pull/*", identity.ref) && contains(["copy_out", "select"], statement.kind) && any_glob(["customers", "*.customers"], statement.tables)
    reason = "pull requests may not read customer data"
  }

  deny "k8s-secrets" {
    when   = target.protocol == "k8s" && statement.kind == "get" && contains(statement.tables, "secrets")
    reason = "CI does not read cluster secrets"
  }

  mask "customer-contact" {
    when    = any_glob(["customers", "*.customers"], statement.tables)
    columns = ["customers.email", "customers.phone"]
    using   = "partial"
  }

  hold "mass-change" {
    when      = contains(["update", "delete"], statement.kind) && (!statement.has_where || result.rows > 1000)
    approvers = ["group:data-platform"]
  }
}

policy "office-network" {
  targets = ["warehouse"]
  when    = cidr_contains("10.30.0.0/16", target.ip) && identity.level == "oidc"
  record  = "full"
}

test "monitor mode still computes deny" {
  target      = "warehouse"
  identity    = { repository = "acme/web", ref = "refs/pull/42/merge" }
  query       = "SELECT * FROM sales.customers"
  expect      = "deny"
  expect_rule = "ci-everything/deny/exports-from-prs"
}

test "main may read customers with masking" {
  target        = "warehouse"
  address       = "10.30.0.9:5432"
  identity      = { repository = "acme/web", ref = "refs/heads/main" }
  query         = "SELECT email FROM customers WHERE id = 1"
  expect        = "mask"
  expect_rule   = "ci-everything/mask/customer-contact"
  expect_record = "full"
}

test "an unqualified mysql delete is held" {
  target      = "orders-mysql"
  identity    = { repository = "acme/shop", ref = "refs/heads/main" }
  statement   = { kind = "delete", tables = ["orders"] }
  expect      = "hold"
  expect_rule = "ci-everything/hold/mass-change"
}

test "a qualified delete hitting many rows is held after the fact" {
  target      = "orders-mysql"
  identity    = { repository = "acme/shop", ref = "refs/heads/main" }
  statement   = { kind = "delete", tables = ["orders"], has_where = true }
  result      = { rows = 4000 }
  expect      = "hold"
  expect_rule = "ci-everything/hold/mass-change"
}

test "reading cluster secrets is denied" {
  target      = "cluster"
  identity    = { repository = "acme/deploy", ref = "refs/heads/main" }
  statement   = { kind = "get", tables = ["secrets"] }
  expect      = "deny"
  expect_rule = "ci-everything/deny/k8s-secrets"
}

test "another org falls to the default" {
  target      = "warehouse"
  identity    = { repository = "evil/fork", ref = "refs/heads/main" }
  query       = "SELECT 1"
  expect      = "deny"
  expect_rule = "default"
}
