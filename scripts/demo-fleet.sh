#!/usr/bin/env bash
# The README's fleet demo (make demo-fleet): two runner "VMs", each a
# sluiced hooked to a private cgroup of its own with its own data
# directory, and the fleet's shared services on 127.0.0.1: one NATS
# server with JetStream and one S3-compatible server (e2e/demofleet:
# nats-server and versitygw, built by scripts/build-nats.sh and
# scripts/build-s3.sh), plus a private PostgreSQL on 127.0.0.2 that the
# jobs use. A ruleset is published once and pulled by both VMs; a job's
# held statement on VM A is approved from "anywhere" through NATS by an
# approver whose OIDC token VM A verifies; both VMs' events are read
# from one stream; and after VM A is gone (sluiced stopped, its data
# directory deleted) its recordings are listed, shown and verified from
# the store. Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "demo-fleet: run as root (sudo make demo-fleet): it attaches eBPF programs to cgroups it creates" >&2; exit 1; }
BIN=${BIN:-bin}
[ -x "$BIN/sluiced" ] && [ -x "$BIN/sluice" ] || { echo "demo-fleet: build first (make build)" >&2; exit 1; }
nats_bin=$(bash scripts/build-nats.sh --cached) || { echo "demo-fleet: nats-server is not built: run scripts/build-nats.sh (make deps does)" >&2; exit 1; }
s3_bin=$(bash scripts/build-s3.sh --cached) || { echo "demo-fleet: versitygw is not built: run scripts/build-s3.sh (make deps does)" >&2; exit 1; }

me=demo-fleet
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
wait_secs=20

work=$(mktemp -d /tmp/sluice-demo-fleet.XXXXXX)
chmod 755 "$work"
scope="sluice-demo-fleet-$$"
mount=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
[ -n "$mount" ] || { echo "demo-fleet: no cgroup2 mount found" >&2; exit 1; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pg_port=$(free_port)
port_a=$(free_port "$pg_port")
port_b=$(free_port "$pg_port" "$port_a")
declare -A pid=()
fleet_pid=""
issuer_pid=""
approver_pid=""

cleanup() {
  set +e
  local v
  for v in "${!pid[@]}"; do
    [ -n "${pid[$v]}" ] && kill "${pid[$v]}" 2>/dev/null && wait "${pid[$v]}" 2>/dev/null
    "$BIN/sluice" uninstall --name "fleet$$$v" >/dev/null 2>&1
  done
  for p in "$fleet_pid" "$issuer_pid" "$approver_pid"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
  done
  [ -f "$work/pg/postmaster.pid" ] && su postgres -s /bin/sh -c "$pgbin/pg_ctl -D $work/pg -m immediate stop" >/dev/null 2>&1
  [ -d "$mount/$scope" ] && find "$mount/$scope" -depth -type d -exec rmdir {} \;
  rm -rf "$work"
}
trap cleanup EXIT

# job V ARGS...: run ARGS as a job of VM V (in its runner cgroup).
job() { local v=$1; shift; "$BIN/sluice" run --cgroup "$scope/$v/runner" -- "$@"; }
run_job() { local v=$1; shift; printf '$ sluice run --cgroup %s -- %s\n' "$scope/$v/runner" "$*"; job "$v" "$@"; }
sock() { echo "$work/$1/sluiced.sock"; }

step "Setup: a private PostgreSQL on 127.0.0.2:$pg_port, the database the jobs of both VMs use"
chown postgres "$work"
start_postgres "$work" "$pg_port" 127.0.0.2
psql -X -h "$work" -p "$pg_port" -U postgres -qc "create table users(id int, email text); insert into users values (1, 'ada@example.com'), (2, 'alan@example.com');"
echo "running; table users created"

step "Setup: the fleet's shared services: one NATS server with JetStream and one S3-compatible server (versitygw) with a bucket recordings under object lock (e2e/demofleet)"
${GO:-go} build -o "$work/demofleet" ./e2e/demofleet
SLUICE_NATS_BIN="$nats_bin" SLUICE_S3_BIN="$s3_bin" "$work/demofleet" -dir "$work/fleet" > "$work/fleet.env" 2> "$work/fleet.log" &
fleet_pid=$!
for _ in $(seq 600); do
  [ -s "$work/fleet.env" ] && break
  kill -0 "$fleet_pid" 2>/dev/null || { echo "demo-fleet: the servers did not start:" >&2; cat "$work/fleet.log" >&2; exit 1; }
  sleep 0.05
done
[ -s "$work/fleet.env" ] || { echo "demo-fleet: the servers did not start within 30 s:" >&2; cat "$work/fleet.log" >&2; exit 1; }
eval "$(head -1 "$work/fleet.env")"
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
echo "NATS: $NATS_URL   S3: http://$S3_ENDPOINT (bucket recordings)"
store=(--store s3://recordings/fleet --store-endpoint "$S3_ENDPOINT" --store-insecure)

step "Setup: the security team's two key pairs: one signs rulesets (VMs get its public half), one is the fleet key each VM gets at boot to endorse its own recording key"
run "$BIN/sluice" rules keygen --out "$work/rules-signing"
run "$BIN/sluice" rules keygen --out "$work/fleet"

step "Setup: two runner VMs, A and B: a sluiced each, hooked to a cgroup of its own, uploading to the store and publishing events to NATS"
# A local OIDC issuer stands in for the CI provider's (outside this
# machine): its tokens say repository acme/api, ref refs/heads/main.
${GO:-go} build -o "$work/demoissuer" ./e2e/demoissuer
"$work/demoissuer" -dir "$work" -claims '{"sub":"repo:acme/api:ref:refs/heads/main","repository":"acme/api","ref":"refs/heads/main","run_id":"1001","actor":"octocat"}' > "$work/issuer.env" 2>&1 &
issuer_pid=$!
wait_for "the demo OIDC issuer" test -s "$work/issuer.env"
eval "$(head -1 "$work/issuer.env")"
# The approvers' identity provider (the security team's SSO, also outside
# this machine): its tokens name alice, of group security.
mkdir -p "$work/idp"
"$work/demoissuer" -dir "$work/idp" -claims '{"sub":"alice","email":"alice@example.com","email_verified":true,"groups":["security"]}' > "$work/idp.env" 2>&1 &
approver_pid=$!
wait_for "the approvers' OIDC issuer" test -s "$work/idp.env"
eval "$(head -1 "$work/idp.env" | sed 's/\b\(ISSUER_URL\|ISSUER_CA\|TOKEN_URL\|REQUEST_TOKEN\)=/APPROVER_\1=/g')"
mkdir -p "$work/rules"
cat > "$work/rules/fleet.hcl" <<HCL
target "fleet-db" {
  protocol = "postgres"
  address  = ["127.0.0.2:$pg_port"]
}

policy "ci-jobs" {
  targets = ["fleet-db"]
  when    = contains([0, 65534], process.uid)

  deny "no-ddl" {
    when   = contains(["drop", "truncate", "alter"], statement.kind)
    reason = "schema changes go through migrations"
  }

  hold "exports" {
    when      = statement.kind == "copy_out"
    approvers = ["group:security"]
    timeout   = "60s"
  }
}

default {
  action = "deny"
  reason = "no policy for this job"
}
HCL
step "1. A ruleset published once reaches both VMs: signed by the security team, pulled and verified by every VM"
run "$BIN/sluice" rules check "$work/rules"
run "$BIN/sluice" rules publish "$work/rules" --to "$NATS_URL/rulesets/ci" --key "$work/rules-signing.key"
echo "-- the VMs start with only the source's URL and the public key:"
for v in a b; do
  mkdir -p "$mount/$scope/$v/runner" "$work/$v"
  port=$port_a; [ "$v" = b ] && port=$port_b
  cat > "$work/$v/sluiced.hcl" <<HCL
name       = "fleet$$$v"
cgroup     = "$scope/$v/runner"
scope      = "$scope/$v"
proxy_port = $port
data_dir   = "$work/$v/data"
api_socket = "$work/$v/sluiced.sock"
# The ruleset comes from the fleet's source, signed: no rules_dir, no push.
rules_source     = "$NATS_URL/rulesets/ci"
rules_public_key = "$work/rules-signing.pub"
rules_pull {
  every = "1s"
}
log {
  format = "json"
}
identity {
  issuer "$ISSUER_URL" {
    audience = "sluice"
  }
  token_host_allowlist = ["127.0.0.1"]
  ca_file              = "$ISSUER_CA"
}
store {
  url            = "s3://recordings/fleet"
  endpoint       = "$S3_ENDPOINT"
  insecure       = true
  retention      = "1d"
  vm             = "vm-$v"
  fleet_key_file = "$work/fleet.key"
  checkpoint     = "5s"
}
events {
  nats_url = "$NATS_URL"
  vm       = "vm-$v"
}
approvals {
  nats_url       = "$NATS_URL"
  vm             = "vm-$v"
  issuer         = "$APPROVER_ISSUER_URL"
  allow_claims   = { groups = "security" }
  issuer_ca_file = "$APPROVER_ISSUER_CA"
}
HCL
  "$BIN/sluiced" --config "$work/$v/sluiced.hcl" > "$work/$v/sluiced.log" 2>&1 &
  pid[$v]=$!
  for _ in $(seq 200); do
    "$BIN/sluice" status --socket "$(sock "$v")" >/dev/null 2>&1 && break
    kill -0 "${pid[$v]}" 2>/dev/null || { cat "$work/$v/sluiced.log"; exit 1; }
    sleep 0.05
  done
done
cat "$work/a/sluiced.hcl"
for v in a b; do
  printf '$ sluice status --socket %s | grep -A2 -E "^(ruleset|pulled)"\n' "$(sock "$v")"
  "$BIN/sluice" status --socket "$(sock "$v")" | grep -A2 -E '^(ruleset|pulled)'
done

step "2. Jobs on both VMs: each VM decides its own jobs' statements (a DROP is refused on B as on A)"
run_job a psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -c "select id, email from users order by id"
run_job a psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -c "DROP TABLE users" || true
run_job b psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -c "DROP TABLE users" || true

step "3. A held statement on VM A is approved from anywhere through NATS: the approver's OIDC token is verified by VM A itself, and the job's own token cannot approve"
PGSSLMODE=disable job a setpriv --reuid=65534 --regid=65534 --clear-groups psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -c "COPY users TO STDOUT" > "$work/held.out" 2>&1 &
held=$!
nats_held_id() { "$BIN/sluice" approvals list --nats "$NATS_URL" --json 2>/dev/null | awk -F'"' '/"id":/ { id = $4 } /"state": "pending"/ { print id; exit }'; }
has_hold() { [ -n "$(nats_held_id)" ]; }
wait_for "the held COPY in the fleet's holds bucket" has_hold
id=$(nats_held_id)
run "$BIN/sluice" approvals list --nats "$NATS_URL"
# Tokens: the approvers' identity provider gives alice (group security)
# one; the job could get one of its own from the CI provider.
get_token() { curl -fsS --cacert "$2" -H "Authorization: bearer $3" "$1&audience=sluice" | sed 's/.*"value":"\([^"]*\)".*/\1/'; }
get_token "$APPROVER_TOKEN_URL" "$APPROVER_ISSUER_CA" "$APPROVER_REQUEST_TOKEN" > "$work/alice.token"
get_token "$TOKEN_URL" "$ISSUER_CA" "$REQUEST_TOKEN" > "$work/job.token"
echo "-- the job tries to approve its own statement with its CI token:"
run "$BIN/sluice" approve "$id" --nats "$NATS_URL" --token-file "$work/job.token" || echo "(refused, as it should be)"
echo "-- alice, of group security, approves from her laptop:"
run "$BIN/sluice" approve "$id" --nats "$NATS_URL" --token-file "$work/alice.token" --comment "export for the migration test"
wait "$held" || true
echo "-- the job after approval:"
cat "$work/held.out"

step "4. Events from every VM in one place: the NATS stream, read from anywhere"
has_events() { [ "$("$BIN/sluice" events tail --nats "$NATS_URL" 2>/dev/null | grep -c '"statement"')" -ge 2 ]; }
wait_for "both denials in the stream" has_events
printf '$ sluice events tail --nats %s | (one line per event, abridged here)\n' "$NATS_URL"
"$BIN/sluice" events tail --nats "$NATS_URL" | awk '{ print substr($0, 1, 220) (length($0) > 220 ? " ..." : "") }'

step "5. A ruleset signed with any other key is refused by both VMs, which keep enforcing the last good one"
run "$BIN/sluice" rules keygen --out "$work/attacker"
cat > "$work/rules/fleet.hcl" <<HCL
target "fleet-db" {
  protocol = "postgres"
  address  = ["127.0.0.2:$pg_port"]
}

default {
  action = "allow"
  reason = "anything goes"
}
HCL
run "$BIN/sluice" rules publish "$work/rules" --to "$NATS_URL/rulesets/ci" --key "$work/attacker.key"
refused() { "$BIN/sluice" status --socket "$(sock "$1")" --json | grep -q '"refused": [1-9]'; }
for v in a b; do
  wait_for "VM $v to refuse the forged bundle" refused "$v"
  printf '$ sluice status --socket %s | grep -A2 "^pulled"\n' "$(sock "$v")"
  "$BIN/sluice" status --socket "$(sock "$v")" | grep -A2 '^pulled' || true
done
run_job b psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -c "DROP TABLE users" || true

step "6. Recordings leave the VM: VM A is destroyed (sluiced stopped, its disk deleted), and its sessions are still listed, shown and verified from the store against the fleet key"
# listed: the store's listing, with the KEY column (vm NAME, or FORGED).
listed() { "$BIN/sluice" sessions list "${store[@]}" --fleet-pub "$work/fleet.pub" "$@"; }
uploaded_a() { [ "$(listed 2>/dev/null | awk '$NF == "vm-a" && $4 == "sealed"' | wc -l)" -ge 2 ]; }
wait_for "VM A's sessions in the store" uploaded_a
kill "${pid[a]}"; wait "${pid[a]}" 2>/dev/null || true; pid[a]=""
"$BIN/sluice" uninstall --name "fleet$$a" >/dev/null
run rm -rf "$work/a"
run "$BIN/sluice" sessions list "${store[@]}" --fleet-pub "$work/fleet.pub"
denied=$(listed --verdict deny | awk '$NF == "vm-a" { print $1; exit }')
run "$BIN/sluice" sessions show "${store[@]}" --fleet-pub "$work/fleet.pub" "$denied"
run "$BIN/sluice" verify "${store[@]}" --fleet-pub "$work/fleet.pub" --all
