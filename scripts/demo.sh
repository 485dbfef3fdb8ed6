#!/usr/bin/env bash
# The README's demo: a private PostgreSQL on 127.0.0.2, sluiced hooked to a
# private cgroup, and psql inside that cgroup reaching the database through
# Sluice without being told. Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "demo: run as root (sudo make demo): it attaches eBPF programs to a cgroup it creates" >&2; exit 1; }
BIN=${BIN:-bin}
[ -x "$BIN/sluiced" ] && [ -x "$BIN/sluice" ] || { echo "demo: build first (make build)" >&2; exit 1; }

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 20000))
    ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
  echo "demo: no free port" >&2; exit 1
}

work=$(mktemp -d /tmp/sluice-demo.XXXXXX)
chmod 755 "$work"
name="demo$$"
cgroup="sluice-demo-$$"
mount=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
[ -n "$mount" ] || { echo "demo: no cgroup2 mount found" >&2; exit 1; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pg_port=$(free_port)
proxy_port=$(free_port)
metrics_port=$(free_port)
sluiced_pid=""
issuer_pid=""

cleanup() {
  set +e
  [ -n "$sluiced_pid" ] && kill "$sluiced_pid" 2>/dev/null && wait "$sluiced_pid" 2>/dev/null
  [ -n "$issuer_pid" ] && kill "$issuer_pid" 2>/dev/null && wait "$issuer_pid" 2>/dev/null
  "$BIN/sluice" uninstall --name "$name" >/dev/null
  [ -f "$work/pg/postmaster.pid" ] && su postgres -s /bin/sh -c "$pgbin/pg_ctl -D $work/pg -m immediate stop" >/dev/null 2>&1
  [ -d "$mount/$cgroup" ] && rmdir "$mount/$cgroup"
  rm -rf "$work"
}
trap cleanup EXIT

bold "1. A private PostgreSQL on 127.0.0.2:$pg_port (and 127.0.0.3, where role app needs a SCRAM password)"
chown postgres "$work"
su postgres -s /bin/sh -c "$pgbin/initdb -D $work/pg -U postgres -A trust --no-sync >/dev/null"
printf 'local all all trust\nhost all app 0.0.0.0/0 scram-sha-256\nhost all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n' > "$work/pg/pg_hba.conf"
su postgres -s /bin/sh -c "$pgbin/pg_ctl -D $work/pg -l $work/pg.log -w -o '-p $pg_port -k $work -c listen_addresses=127.0.0.2,127.0.0.3' start >/dev/null"
psql -X -h "$work" -p "$pg_port" -U postgres -qc "create table users(id int, email text); insert into users values (1, 'ada@example.com'), (2, 'alan@example.com');"
# The app role's password exists only in a root-only file on this host.
mkdir -m 700 "$work/secrets"
app_secret="demo-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
(umask 077; printf '%s\n' "$app_secret" > "$work/secrets/app")
psql -X -h "$work" -p "$pg_port" -U postgres -qc "create role app login password '$app_secret'; grant select on users to app;"
echo "running; table users and role app created"

bold "2. sluiced on cgroup $cgroup, intercepting 127.0.0.2:$pg_port and 127.0.0.3:$pg_port"
# A local OIDC issuer stands in for GitHub's (outside this machine): its
# tokens say repository acme/api, ref refs/heads/main.
${GO:-go} build -o "$work/demoissuer" ./e2e/demoissuer
"$work/demoissuer" -dir "$work" -claims '{"sub":"repo:acme/api:ref:refs/heads/main","repository":"acme/api","ref":"refs/heads/main","run_id":"1001","actor":"octocat"}' > "$work/issuer.env" 2>&1 &
issuer_pid=$!
for _ in $(seq 100); do [ -s "$work/issuer.env" ] && break; sleep 0.1; done
eval "$(head -1 "$work/issuer.env")"
mkdir -p "$mount/$cgroup" "$work/rules"
cat > "$work/rules/demo.hcl" <<HCL
# The demo's ruleset: one PostgreSQL database that jobs running as root may
# read and write but never drop from; anything else gets the default deny.
target "demo-db" {
  protocol = "postgres"
  address  = ["127.0.0.2:$pg_port"]
}

policy "ci-jobs" {
  targets = ["demo-db"]
  when    = contains([0, 65534], process.uid) # root and nobody run the demo's jobs

  deny "no-ddl" {
    when   = contains(["drop", "truncate", "alter"], statement.kind)
    reason = "schema changes go through migrations"
  }

  deny "no-bulk-delete" {
    when   = statement.kind == "delete" && !statement.has_where
    reason = "CI never empties a table"
  }

  hold "exports" {
    when      = statement.kind == "copy_out"
    approvers = ["local-admin"]
    timeout   = "2m"
    reason    = "exports of production data need a human"
  }

  mask "contact-details" {
    columns = ["users.email"]
    detect  = ["email"] # where the column's origin is lost, as in upper(email)
    using   = "email"
  }
}

# The same server on 127.0.0.3 holds its credentials itself: jobs of
# acme/api on main authenticate as app without knowing its password.
target "vault-db" {
  protocol = "postgres"
  address  = ["127.0.0.3:$pg_port"]

  credential "app" {
    user          = "app"
    password_file = "$work/secrets/app"
    policies      = ["acme-api-main"]
  }
}

policy "acme-api-main" {
  targets = ["vault-db"]
  when    = identity.repository == "acme/api"
  credential "app" {
    when = identity.ref == "refs/heads/main"
  }
}

default {
  action = "deny"
  reason = "no policy for this job"
}

test "main of acme/api gets the app credential" {
  target            = "vault-db"
  identity          = { repository = "acme/api", ref = "refs/heads/main" }
  expect            = "allow"
  expect_credential = "app"
}

test "DROP is refused" {
  target      = "demo-db"
  process     = { uid = 0 }
  query       = "DROP TABLE users"
  expect      = "deny"
  expect_rule = "ci-jobs/deny/no-ddl"
}

test "root may read, with contact details masked" {
  target      = "demo-db"
  process     = { uid = 0 }
  query       = "SELECT email FROM users"
  expect      = "mask"
  expect_rule = "ci-jobs/mask/contact-details"
}

test "others get the default" {
  target      = "demo-db"
  process     = { uid = 12345 }
  statement   = { kind = "connect" }
  expect      = "deny"
  expect_rule = "default"
}
HCL
cat > "$work/sluiced.hcl" <<HCL
name       = "$name"
cgroup     = "$cgroup"
proxy_port = $proxy_port
data_dir   = "$work/data"
api_socket = "$work/sluiced.sock"
rules_dir  = "$work/rules"
metrics_addr = "127.0.0.1:$metrics_port"
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
HCL
cat "$work/sluiced.hcl"
run "$BIN/sluice" rules check "$work/rules"
run "$BIN/sluice" rules test "$work/rules"
"$BIN/sluiced" --config "$work/sluiced.hcl" > "$work/sluiced.log" 2>&1 &
sluiced_pid=$!
for _ in $(seq 100); do
  "$BIN/sluice" status --socket "$work/sluiced.sock" >/dev/null 2>&1 && break
  kill -0 "$sluiced_pid" 2>/dev/null || { cat "$work/sluiced.log"; exit 1; }
  sleep 0.1
done
run "$BIN/sluice" status --socket "$work/sluiced.sock"

run "$BIN/sluice" doctor --config "$work/sluiced.hcl" || true

bold "3. psql inside the cgroup, pointed at the real address, unchanged"
run "$BIN/sluice" run --cgroup "$cgroup" -- psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -c "select id, email from users order by id"

bold "4. A blocked statement: DROP TABLE fails with a normal PostgreSQL error naming the rule; the server never sees it"
run "$BIN/sluice" run --cgroup "$cgroup" -- psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -v VERBOSITY=verbose -c "DROP TABLE users" || true
echo "-- the same with a data-modifying CTE, inside a transaction block, then the session goes on:"
"$BIN/sluice" run --cgroup "$cgroup" -- psql -X -h 127.0.0.2 -p "$pg_port" -U postgres <<'SQL' || true
BEGIN;
WITH gone AS (DELETE FROM users RETURNING *) SELECT count(*) FROM gone;
ROLLBACK;
SELECT count(*) AS users_still_there FROM users;
SQL
sleep 0.2
grep '"@message":"statement denied"' "$work/sluiced.log" | tail -1
echo "-- and a DROP smuggled inside a DO block, whose body Sluice reads too:"
run "$BIN/sluice" run --cgroup "$cgroup" -- psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -c "DO \$\$ BEGIN EXECUTE 'DROP TABLE users'; END \$\$" || true
run psql -X -h "$work" -p "$pg_port" -U postgres -Atc "SELECT 'users still there: ' || count(*) FROM users"

bold "4b. A masked column: users.email reaches the job with its local part replaced (same person, same mask)"
run "$BIN/sluice" run --cgroup "$cgroup" -- psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -c "SELECT id, email, email AS alias, upper(email) AS expression FROM users ORDER BY id"
run psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -c "SELECT id, email FROM users ORDER BY id"
echo "(the second query ran outside the cgroup: the real values)"
${GO:-go} build -o "$work/pgxclient" ./e2e/pgxclient
echo "A Go program (pgx) pipelines a transaction's first SELECT behind its BEGIN, as a batch and byte for byte as JDBC does; both come back masked:"
run "$BIN/sluice" run --cgroup "$cgroup" -- "$work/pgxclient" "postgres://postgres@127.0.0.2:$pg_port/postgres?sslmode=disable" pipelined

bold "5. The flow log: one structured line per flow, with the original destination, the process, and its statements"
grep '"@message":"flow"' "$work/sluiced.log" | tail -1

bold "5b. Recorded: every session is in a signed, hash-chained recording responders can search, read, verify and export"
run "$BIN/sluice" sessions list --socket "$work/sluiced.sock"
last=$("$BIN/sluice" sessions list --socket "$work/sluiced.sock" --verdict deny --json | awk -F'"' '/"id":/ { print $4; exit }')
run "$BIN/sluice" sessions show --socket "$work/sluiced.sock" "$last"
run "$BIN/sluice" verify --socket "$work/sluiced.sock" --all

bold "5c. A held statement: a COPY export waits for a human; the job's log says how to approve"
PGSSLMODE=disable "$BIN/sluice" run --cgroup "$cgroup" -- setpriv --reuid=65534 --regid=65534 --clear-groups psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -c "COPY users TO STDOUT" > "$work/held.out" 2>&1 &
held=$!
for _ in $(seq 100); do
  id=$("$BIN/sluice" approvals list --socket "$work/sluiced.sock" --json | awk -F'"' '/"ID"|"id"/ { print $4; exit }')
  [ -n "$id" ] && break
  sleep 0.1
done
run "$BIN/sluice" approvals list --socket "$work/sluiced.sock"
echo "-- the job so far (it is waiting):"
cat "$work/held.out"
run "$BIN/sluice" approve "$id" --socket "$work/sluiced.sock" --comment "one-off export for the migration test"
wait "$held" || true
echo "-- the job after approval:"
cat "$work/held.out"

bold "5d. Credential injection: a CI job connects as app with a wrong password; Sluice authenticates with the secret only root can read"
# A GitHub job: its process tree hangs below a Runner.Worker and can ask
# the issuer for a token, as GitHub's runner lets a job do.
cp /bin/sh "$work/Runner.Worker"
job() {
  ACTIONS_ID_TOKEN_REQUEST_URL="$TOKEN_URL" ACTIONS_ID_TOKEN_REQUEST_TOKEN="$REQUEST_TOKEN" PGPASSWORD=not-the-password \
    "$BIN/sluice" run --cgroup "$cgroup" -- "$work/Runner.Worker" -c "$1"
}
printf '$ PGPASSWORD=not-the-password psql -h 127.0.0.3 -U whoever -c "select current_user, count(*) from users"   (as a job of acme/api on main)\n'
job "psql -X -h 127.0.0.3 -p $pg_port -U whoever -d postgres -c 'select current_user, count(*) from users'"
echo "-- the same psql outside a CI job (no verified identity):"
run "$BIN/sluice" run --cgroup "$cgroup" -- psql -X -h 127.0.0.3 -p "$pg_port" -U app -d postgres -Atc "select 1" || echo "(refused: without a verified CI identity no policy covers this connection)"
sleep 0.2
grep '"@message":"authenticated with an injected credential"' "$work/sluiced.log" | tail -1
if grep -rqF "$app_secret" "$work/sluiced.log" "$work/data"; then echo "demo: the secret leaked into the log or the recordings" >&2; exit 1; fi
echo "the app password appears in no log line and no recording"

bold "5e. Prometheus metrics on loopback: flows, verdicts by rule, statement latency"
curl -fsS "http://127.0.0.1:$metrics_port/metrics" | grep -E '^sluice_(flows_total|verdicts_total|holds_pending|statement_latency_seconds_count)' | head -12

bold "6. A job that no policy covers (uid 12345) gets the default deny"
run "$BIN/sluice" run --cgroup "$cgroup" -- setpriv --reuid=12345 --regid=12345 --clear-groups psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -Atc "select 1" || echo "(denied, as the ruleset says)"
sleep 0.2
grep '"@message":"flow denied"' "$work/sluiced.log" | tail -1

bold "7. A broken edit of the ruleset is refused; the previous rules keep enforcing"
echo 'policy "oops" { targets = ["no-such-target"] }' > "$work/rules/oops.hcl"
sleep 0.5
run "$BIN/sluice" status --socket "$work/sluiced.sock" | sed -n '/^ruleset/,/^target/p'
rm "$work/rules/oops.hcl"

bold "8. The same psql outside the cgroup is not intercepted"
run psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -Atc "select 'direct, not through sluice'"
run "$BIN/sluice" status --socket "$work/sluiced.sock"

bold "9. Fail closed: with sluiced killed, the cgroup's connects are refused, not sent direct"
kill -9 "$sluiced_pid"; wait "$sluiced_pid" 2>/dev/null || true; sluiced_pid=""
run "$BIN/sluice" run --cgroup "$cgroup" -- psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -Atc "select 1" || echo "(refused, as it should be)"

bold "10. sluice uninstall removes the pinned hooks"
run "$BIN/sluice" uninstall --name "$name"

bold "Not in this demo yet"
echo "Jobs inside containers (Docker or Kubernetes executors); MySQL, SSH and Kubernetes decoders."
