# Main-branch CI of acme/api may run read-only queries against production.
policy "ci-main-readonly" {
  targets = ["prod-db", "replica"]
  when    = identity.repository == "acme/api" && identity.ref == "refs/heads/main"
  record  = "commands"

  # Everything not explicitly allowed below is denied.
  default_action = "deny"

  allow "reads" {
    when = contains(["select", "show", "explain", "set", "transaction"], statement.kind)
  }

  deny "secrets-schema" {
    when   = any_glob(["vault.*", "*.api_keys"], statement.tables)
    reason = "CI never reads the secrets schema"
  }

  deny "server-files" {
    when   = anytrue([for f in statement.functions : regex("^(pg_catalog\\.)?(pg_read_file|pg_read_binary_file|pg_ls_dir|lo_import)$", f)])
    reason = "reading server files is not a query"
  }

  hold "big-read" {
    when      = result.rows > 5000 || (statement.kind == "select" && !statement.has_limit && !statement.has_where && any_glob(["events", "audit.*"], statement.tables))
    approvers = ["group:data-owners"]
    timeout   = "10m"
    reason    = "large reads from production need a data owner"
  }

  mask "pii" {
    columns = ["users.email", "users.ssn", "*.password_hash"]
    detect  = ["email", "card_number", "secret"]
    using   = "hash"
    record  = "full"
  }
}

# Every job, whatever else applies, is barred from dropping things.
policy "global-guard" {
  targets = ["*"]

  deny "ddl" {
    when   = contains(["drop", "truncate", "alter", "grant", "revoke"], statement.kind)
    reason = "schema changes go through migrations"
  }
}

# A reporting job from a scheduled workflow may read the replica freely.
policy "reporting" {
  targets = ["replica"]
  when    = identity.repository == "acme/reports" && glob("refs/heads/*", identity.ref)

  allow "anything-on-replica" {}
}

# A job without a verified CI token may do nothing at all.
policy "unverified-lockout" {
  targets        = ["*"]
  when           = identity.level != "oidc"
  default_action = "deny"
}
