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
    go build -o "$pool_dir/demoissuer" ./e2e/demoissuer
    "$pool_dir/demoissuer" -dir "$pool_dir" -claims '{"sub":"repo:acme/api:ref:refs/heads/main","repository":"acme/api","ref":"refs/heads/main","run_id":"1","actor":"bench"}' \
      > "$pool_dir/issuer.env" 2>&1 &
    pool_issuer_pid=$!
    for _ in $(seq 200); do
      [ -s "$pool_dir/issuer.env" ] && break
      kill -0 "$pool_issuer_pid" 2>/dev/null || break
      sleep 0.05
    done
    grep -q '^ISSUER_URL=' "$pool_dir/issuer.env" || { echo "bench: the OIDC issuer did not start:" >&2; cat "$pool_dir/issuer.env" >&2; exit 1; }
    # ISSUER_URL, ISSUER_CA, TOKEN_URL and REQUEST_TOKEN.
    eval "$(head -1 "$pool_dir/issuer.env")"
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
# the issuer, unless bench/ssh.sh or bench/k8s.sh did (the daemon reads
# its config only at start, so the block is appended and the daemon
# restarted).
pool_identity() {
  ssh_wanted && return 0
  k8s_wanted && return 0
  cat >> "$work/sluiced.hcl" <<HCL
identity {
  issuer "$ISSUER_URL" {
    audience = "sluice"
  }
  token_host_allowlist = ["127.0.0.1"]
  ca_file              = "$ISSUER_CA"
}
HCL
  kill "$sluiced_pid"; wait "$sluiced_pid" || true
  "$BIN/sluiced" --config "$work/sluiced.hcl" > "$work/sluiced.log" 2>&1 &
  sluiced_pid=$!
  for _ in $(seq 100); do "$BIN/sluice" status --socket "$work/sluiced.sock" >/dev/null 2>&1 && break; sleep 0.1; done
  "$BIN/sluice" status --socket "$work/sluiced.sock" >/dev/null 2>&1 ||
    { echo "bench: sluiced did not answer after the restart; see $work/sluiced.log" >&2; exit 1; }
}

# pool_job: the command prefix that runs a command as a GitHub job of
# acme/api in the hooked cgroup, a child of a Runner.Worker that may
# request an ID token.
pool_job() {
  ACTIONS_ID_TOKEN_REQUEST_URL="$TOKEN_URL" ACTIONS_ID_TOKEN_REQUEST_TOKEN="$REQUEST_TOKEN" \
    "$BIN/sluice" run --cgroup "$cgroup" -- "$pool_dir/Runner.Worker" -c '"$@"' sh "$@"
}
