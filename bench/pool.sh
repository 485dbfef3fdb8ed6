# shellcheck shell=bash
# The pooled mode of the connection workload (C), sourced by bench/suite.sh:
# pgbench -C through a postgres target that injects a credential and keeps
# its server connections (upstream_pool), as a CI job of acme/api whose
# identity the local OIDC issuer verifies (credentials are injected only
# for verified jobs). The target is PostgreSQL's third address, 127.0.0.12;
# the default ruleset's baseline policy covers it as it covers the
# commands mode's target, and the job's pgbench gives no password.
#
# Uses the suite's $work, $BIN, $cgroup, $pg_port and sluiced helpers.

pool_dir=""; pool_issuer_pid=""
pool_host=127.0.0.12

# pool_wanted: the C workload runs, in a selection that includes pooled.
pool_wanted() {
  { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" C "* ]]; } &&
    { [ -z "${MODES:-}" ] || [[ " $MODES " == *" pooled "* ]]; }
}

# pool_start: the credential's password file, the job's Runner.Worker and,
# unless bench/ssh.sh or bench/k8s.sh started one, the OIDC issuer.
pool_start() {
  pool_dir=$work/pool
  mkdir "$pool_dir"
  # The server trusts the bench's connections; the password is never checked.
  printf 'bench-pool-password\n' > "$pool_dir/password"
  chmod 600 "$pool_dir/password"
  if [ -z "${ISSUER_URL:-}" ]; then
    issuer_start "$pool_dir"
    pool_issuer_pid=$issuer_pid
  fi
  cp /bin/sh "$pool_dir/Runner.Worker"
}

# pool_stop stops the issuer pool_start started, by its pid.
pool_stop() {
  [ -n "$pool_issuer_pid" ] && kill "$pool_issuer_pid" 2>/dev/null && wait "$pool_issuer_pid" 2>/dev/null
  pool_issuer_pid=""
  return 0
}

# pool_ruleset RECORD: the pooled target and the policy that grants its
# credential to jobs of acme/api, at the record level RECORD (nothing when
# the pooled mode does not run).
pool_ruleset() {
  [ -n "$pool_dir" ] || return 0
  cat <<HCL
target "bench-pooled" {
  protocol      = "postgres"
  address       = ["$pool_host:$pg_port"]
  upstream_pool = 8
  credential "bench" {
    user          = "postgres"
    password_file = "$pool_dir/password"
    policies      = ["bench-pooled"]
  }
}
policy "bench-pooled" {
  targets = ["bench-pooled"]
  when    = identity.repository == "acme/api"
  record  = "$1"
  credential "bench" {}
}
HCL
}

# pool_identity gives the running sluiced the identity block that trusts
# the issuer (bench/lib.sh's identity_restart), unless bench/ssh.sh or
# bench/k8s.sh did.
pool_identity() {
  ssh_wanted && return 0
  k8s_wanted && return 0
  identity_restart
}

# pool_job: the command prefix that runs a command as a GitHub job of
# acme/api in the hooked cgroup, a child of a Runner.Worker that may
# request an ID token.
pool_job() {
  ACTIONS_ID_TOKEN_REQUEST_URL="$TOKEN_URL" ACTIONS_ID_TOKEN_REQUEST_TOKEN="$REQUEST_TOKEN" \
    "$BIN/sluice" run --cgroup "$cgroup" -- "$pool_dir/Runner.Worker" -c '"$@"' sh "$@"
}
