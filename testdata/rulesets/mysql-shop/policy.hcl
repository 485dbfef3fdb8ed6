# Integration tests of acme/shop may read and write the shop's tables, never
# its server's files, its users or its binary log, and bulk deletes need a
# human.
policy "shop-ci" {
  targets = ["shop-db"]
  when    = identity.repository == "acme/shop"
  record  = "commands"

  deny "server-files" {
    when = (
      contains(sql.flags, "into_outfile") ||
      contains(sql.flags, "load_file") ||
      contains(sql.flags, "load_data") ||
      contains(sql.flags, "load_data_local")
    )
    reason = "the server's files stay on the server"
  }

  deny "accounts" {
    when   = contains(sql.flags, "user_admin") || contains(sql.flags, "server_admin")
    reason = "accounts and server administration are not CI's business"
  }

  deny "replication" {
    when   = sql.kind == "replication"
    reason = "no binary log from CI"
  }

  deny "ddl" {
    when   = contains(["drop", "truncate", "alter"], sql.kind)
    reason = "schema changes go through migrations"
  }

  hold "bulk-delete" {
    when      = sql.kind == "delete" && !sql.has_where
    approvers = ["group:shop-owners"]
    timeout   = "10m"
    reason    = "deleting many rows needs a shop owner"
  }

  mask "customers" {
    columns = ["customers.email", "customers.phone", "*.card_number"]
    detect  = ["email", "card_number"]
    using   = "hash"
  }
}
