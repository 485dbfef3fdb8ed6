test "a join is read with customer emails masked" {
  target      = "shop-db"
  identity    = { repository = "acme/shop" }
  query       = "SELECT o.id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = 7"
  expect      = "mask"
  expect_rule = "shop-ci/mask/customers"
}

test "LOAD_FILE hidden in a MariaDB executable comment is denied" {
  target      = "shop-db"
  identity    = { repository = "acme/shop" }
  query       = "SELECT 1 /*M! , LOAD_FILE('/etc/passwd') */"
  expect      = "deny"
  expect_rule = "shop-ci/deny/server-files"
}

test "INTO OUTFILE is denied" {
  target      = "shop-db"
  identity    = { repository = "acme/shop" }
  query       = "SELECT * FROM customers INTO OUTFILE '/tmp/customers.csv'"
  expect      = "deny"
  expect_rule = "shop-ci/deny/server-files"
}

test "LOAD DATA LOCAL is denied" {
  target      = "shop-db"
  identity    = { repository = "acme/shop" }
  query       = "LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE customers"
  expect      = "deny"
  expect_rule = "shop-ci/deny/server-files"
}

test "GRANT is denied" {
  target      = "shop-db"
  identity    = { repository = "acme/shop" }
  query       = "GRANT ALL ON *.* TO 'ci'@'%'"
  expect      = "deny"
  expect_rule = "shop-ci/deny/accounts"
}

test "a DROP in a multi-statement text denies the whole text" {
  target      = "shop-db"
  identity    = { repository = "acme/shop" }
  query       = "SELECT 1; DROP TABLE orders"
  expect      = "deny"
  expect_rule = "shop-ci/deny/ddl"
}

test "a binlog dump is denied" {
  target      = "shop-db"
  identity    = { repository = "acme/shop" }
  statement   = { kind = "replication", flags = ["binlog_dump"] }
  expect      = "deny"
  expect_rule = "shop-ci/deny/replication"
}

test "DELETE without WHERE waits for a shop owner" {
  target      = "shop-db"
  identity    = { repository = "acme/shop" }
  query       = "DELETE FROM carts"
  expect      = "hold"
  expect_rule = "shop-ci/hold/bulk-delete"
}

test "another repository gets the default" {
  target      = "shop-db"
  identity    = { repository = "acme/other" }
  query       = "SELECT 1"
  expect      = "deny"
  expect_rule = "default"
}
