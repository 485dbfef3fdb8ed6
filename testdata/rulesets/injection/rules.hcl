# Credential injection: jobs of acme/api reach the production database
# without holding its password. Main-branch deploy jobs authenticate as
# deployer, every other acme/api job as ci_readonly; nothing else gets in.

target "prod" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]

  credential "deployer" {
    user          = "deployer"
    password_file = "/etc/sluice/secrets/prod-deployer"
    policies      = ["acme-api"]
  }

  credential "ci_readonly" {
    user             = "ci_readonly"
    password_command = ["/usr/local/bin/db-token", "ci_readonly"]
    cache_for        = "5m"
    policies         = ["*"]
  }
}

policy "acme-api" {
  targets = ["prod"]
  when    = identity.repository == "acme/api"

  credential "deployer" {
    when = identity.ref == "refs/heads/main" && identity.workflow == "deploy"
  }
  credential "ci_readonly" {}

  deny "ddl-outside-deploys" {
    when   = contains(["drop", "alter", "create"], statement.kind) && identity.workflow != "deploy"
    reason = "schema changes run only in the deploy workflow"
  }
}

test "main-branch deploys authenticate as deployer" {
  target            = "prod"
  identity          = { repository = "acme/api", ref = "refs/heads/main", workflow = "deploy" }
  expect            = "allow"
  expect_credential = "deployer"
}

test "other branches of the repository read only" {
  target            = "prod"
  identity          = { repository = "acme/api", ref = "refs/heads/feature", workflow = "deploy" }
  expect            = "allow"
  expect_credential = "ci_readonly"
}

test "another repository gets no credential" {
  target            = "prod"
  identity          = { repository = "acme/web", ref = "refs/heads/main" }
  expect            = "deny"
  expect_credential = "none"
}

test "a job without a verified identity gets no credential" {
  target            = "prod"
  identity_level    = "unverified"
  expect            = "deny"
  expect_credential = "none"
}
