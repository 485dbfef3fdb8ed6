#!/usr/bin/env bash
# make bench-fleet: the fleet paths at scale on this machine. One real
# nats-server with JetStream and one real S3-compatible server (versitygw),
# both from e2e/demofleet, one private PostgreSQL on 127.0.0.2, and N
# sluiced daemons ("VMs"), each hooked to a cgroup of its own, each with
# store, events and approvals blocks pointing at the shared servers. Each
# VM runs a synthetic load for DURATION seconds: a loop of short psql
# sessions in its cgroup, every session one allowed SELECT and DENIALS
# (20) DROPs the ruleset denies (so every session is one recording to
# upload and DENIALS + 2 events to publish: its start, the denials and its
# end). Then every
# VM holds one COPY, which is approved through NATS with an approver's
# OIDC token.
#
# Per N it reports: sessions run; the events of this N's VMs counted in
# the stream (all of them, and the denials) and their rate over the load
# window and its drain, and how long after the load ended the last of them
# arrived; seal-to-upload delay (p50, p95, max of sluiced's `recording
# uploaded` lines, delay_after_seal_ms); decision-to-effect delay (from `sluice approve
# --nats` starting to the held psql exiting); and each daemon's CPU over
# the window (utime+stime, % of one core, and per session) and memory
# (VmRSS at the end, VmHWM).
#
# The daemons share the host's network namespace (loopback), not one each:
# what is measured is the fleet path (NATS, S3, approvals), which network
# namespaces would not change. Client, servers and every daemon share two
# cores, so absolute rates are this machine's, not a fleet's.
#
#   sudo make bench-fleet                 # N="1 4 16" DURATION=15
#   N="1 4" DURATION=10 DENIALS=5 bench/fleet.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-fleet: run as root" >&2; exit 1; }
NS=${N:-1 4 16}
DURATION=${DURATION:-15}
DENIALS=${DENIALS:-20}
BIN=${BIN:-bin}
me=bench-fleet
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
[ -x "$BIN/sluiced" ] && [ -x "$BIN/sluice" ] || make build >/dev/null
nats_bin=$(bash scripts/build-nats.sh --cached)
s3_bin=$(bash scripts/build-s3.sh --cached)

work=$(mktemp -d /tmp/sluice-bench-fleet.XXXXXX)
chmod 755 "$work"
scope="sluice-bench-fleet-$$"
mount=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
declare -A dpid=()
bg_pids=()
stop_daemons() {
  local i
  for i in "${!dpid[@]}"; do
    kill "${dpid[$i]}" 2>/dev/null && wait "${dpid[$i]}" 2>/dev/null
    "$BIN/sluice" uninstall --name "bf$$v$i" >/dev/null 2>&1
    unset "dpid[$i]"
  done
}
cleanup() {
  set +e
  local p
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  stop_daemons
  [ -f "$work/pg/postmaster.pid" ] && su postgres -s /bin/sh -c "$pgbin/pg_ctl -D $work/pg -m immediate stop" >/dev/null 2>&1
  [ -d "$mount/$scope" ] && find "$mount/$scope" -depth -type d -exec rmdir {} \;
  rm -rf "$work"
}
trap cleanup EXIT

# The shared servers.
pg_port=$(free_port)
chown postgres "$work"
start_postgres "$work" "$pg_port" 127.0.0.2 -c max_connections=200
psql -X -h "$work" -p "$pg_port" -U postgres -qc "create table users(id int, email text); insert into users select i, 'p'||i||'@example.com' from generate_series(1, 10) i"
${GO:-go} build -o "$work/demofleet" ./e2e/demofleet
${GO:-go} build -o "$work/demoissuer" ./e2e/demoissuer
SLUICE_NATS_BIN="$nats_bin" SLUICE_S3_BIN="$s3_bin" "$work/demofleet" -dir "$work/fleet" > "$work/fleet.env" 2> "$work/fleet.log" &
bg_pids+=($!)
wait_secs=60 wait_for "nats-server and versitygw" test -s "$work/fleet.env"
eval "$(head -1 "$work/fleet.env")"
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
mkdir -p "$work/idp"
"$work/demoissuer" -dir "$work/idp" -claims '{"sub":"alice","email":"alice@example.com","email_verified":true,"groups":["security"]}' > "$work/idp.env" 2>&1 &
bg_pids+=($!)
wait_secs=10 wait_for "the approvers' OIDC issuer" test -s "$work/idp.env"
eval "$(head -1 "$work/idp.env")"
curl -fsS --cacert "$ISSUER_CA" -H "Authorization: bearer $REQUEST_TOKEN" "$TOKEN_URL&audience=sluice" | sed 's/.*"value":"\([^"]*\)".*/\1/' > "$work/alice.token"

mkdir -p "$work/rules"
cat > "$work/rules/bench.hcl" <<HCL
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

# stream_count TYPE: how many events of TYPE the stream holds for this run.
stream_count() { "$BIN/sluice" events tail --nats "$NATS_URL" 2>/dev/null | grep -c "\"type\":\"$1\"" || true; }
# vm_count PREFIX: how many events of any type from VMs named PREFIX* the stream holds.
vm_count() { "$BIN/sluice" events tail --nats "$NATS_URL" 2>/dev/null | grep -c "\"vm\":\"$1" || true; }
# pct P: the P-th percentile of the numbers on stdin (nearest rank).
pct() { sort -n | awk -v p="$1" '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit } i = int((p * NR + 99) / 100); if (i < 1) i = 1; print v[i] }'; }
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

results=()
for n in $NS; do
  echo "bench-fleet: N=$n: starting $n daemons" >&2
  # A fresh stream and bucket contents per N: events are counted by VM
  # names unique to this N.
  start_stream_statements=$(stream_count statement)
  for i in $(seq "$n"); do
    v="n$n-vm$i"
    mkdir -p "$mount/$scope/$v/runner" "$work/$v"
    port=$(free_port "$pg_port")
    cat > "$work/$v/sluiced.hcl" <<HCL
name       = "bf$$v$i"
cgroup     = "$scope/$v/runner"
scope      = "$scope/$v"
proxy_port = $port
data_dir   = "$work/$v/data"
api_socket = "$work/$v/sluiced.sock"
rules_dir  = "$work/rules"
log {
  format = "json"
}
store {
  url      = "s3://recordings/bench"
  endpoint = "$S3_ENDPOINT"
  insecure = true
  vm       = "$v"
}
events {
  nats_url = "$NATS_URL"
  vm       = "$v"
}
approvals {
  nats_url       = "$NATS_URL"
  vm             = "$v"
  issuer         = "$ISSUER_URL"
  allow_claims   = { groups = "security" }
  issuer_ca_file = "$ISSUER_CA"
}
HCL
    "$BIN/sluiced" --config "$work/$v/sluiced.hcl" > "$work/$v/sluiced.log" 2>&1 &
    dpid[$i]=$!
  done
  for i in $(seq "$n"); do
    wait_secs=30 wait_for "daemon $i of $n" "$BIN/sluice" status --socket "$work/n$n-vm$i/sluiced.sock"
  done

  # The load: every VM's loop of sessions, for DURATION seconds.
  declare -A cpu0=()
  for i in $(seq "$n"); do cpu0[$i]=$(cpu_ticks "${dpid[$i]}"); done
  load_pids=()
  t0=$(date +%s.%N)
  { echo "select count(*) from users;"; for _ in $(seq "$DENIALS"); do echo "drop table users;"; done; } > "$work/session.sql"
  for i in $(seq "$n"); do
    v="n$n-vm$i"
    "$BIN/sluice" run --cgroup "$scope/$v/runner" -- bash -c '
      end=$((SECONDS + '"$DURATION"')); k=0
      while [ $SECONDS -lt $end ]; do
        psql -X -q -h 127.0.0.2 -p '"$pg_port"' -U postgres -f '"$work/session.sql"' >/dev/null 2>&1
        k=$((k + 1))
      done
      echo "$k"' > "$work/$v/sessions" &
    load_pids+=($!)
  done
  for p in "${load_pids[@]}"; do wait "$p"; done
  t1=$(date +%s.%N)
  sessions=0
  for i in $(seq "$n"); do sessions=$((sessions + $(cat "$work/n$n-vm$i/sessions"))); done
  # Every denial in the stream (DENIALS per session): how long after the
  # load ended the last one arrived.
  want=$((start_stream_statements + sessions * DENIALS))
  wait_secs=120 wait_for "all $((sessions * DENIALS)) denials in the stream" test "$(stream_count statement)" -ge "$want"
  t2=$(date +%s.%N)
  # CPU over the load window (and the drain), per daemon.
  cpu_sum=0; rss_list=(); hwm_list=()
  for i in $(seq "$n"); do
    c=$(( $(cpu_ticks "${dpid[$i]}") - ${cpu0[$i]} ))
    cpu_sum=$((cpu_sum + c))
    rss_list+=("$(awk '/^VmRSS/ { print $2 }' "/proc/${dpid[$i]}/status")")
    hwm_list+=("$(awk '/^VmHWM/ { print $2 }' "/proc/${dpid[$i]}/status")")
  done
  # Uploads: every session's recording, each logged with its delay.
  uploaded() { [ "$(cat "$work"/n"$n"-vm*/sluiced.log | grep -c '"@message":"recording uploaded"')" -ge "$sessions" ]; }
  wait_secs=120 wait_for "all $sessions recordings uploaded" uploaded

  events=$(( $(stream_count statement) - start_stream_statements ))
  all_events=$(vm_count "n$n-vm")

  # Decisions: one held COPY per VM, approved through NATS.
  dec=()
  for i in $(seq "$n"); do
    v="n$n-vm$i"
    "$BIN/sluice" run --cgroup "$scope/$v/runner" -- psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -c "COPY (select 1) TO STDOUT" > "$work/$v/held.out" 2>&1 &
    held=$!
    hid() { "$BIN/sluice" approvals list --nats "$NATS_URL" --json 2>/dev/null | awk -F'"' -v vm="$1" '/"vm":/ { cur = $4 } /"id":/ { id = $4 } /"state": "pending"/ && cur == vm { print id; exit }'; }
    has_hid() { [ -n "$(hid "$1")" ]; }
    wait_secs=30 wait_for "the hold of $v" has_hid "$v"
    id=$(hid "$v")
    a=$(date +%s%N)
    "$BIN/sluice" approve "$id" --nats "$NATS_URL" --token-file "$work/alice.token" >/dev/null &
    ap=$!
    wait "$held"
    b=$(date +%s%N)
    wait "$ap"
    grep -q '^1$' "$work/$v/held.out" || { echo "bench-fleet: $v's approved COPY did not run:" >&2; cat "$work/$v/held.out" >&2; exit 1; }
    dec+=($(( (b - a) / 1000000 )))
  done

  window=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  lag=$(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.2f", b - a }')
  # Every event of this N's VMs counted in the stream, over the load
  # window and the drain after it (until the last denial arrived).
  rate=$(awk -v e="$all_events" -v a="$t0" -v b="$t2" 'BEGIN { printf "%.0f", e / (b - a) }')
  up=$(cat "$work"/n"$n"-vm*/sluiced.log | grep '"@message":"recording uploaded"' | sed 's/.*"delay_after_seal_ms":\([0-9.]*\).*/\1/')
  up=$(echo "$up" | awk '{ printf "%.0f\n", $1 }')
  up50=$(echo "$up" | pct 50); up95=$(echo "$up" | pct 95); upmax=$(echo "$up" | pct 100)
  d50=$(printf '%s\n' "${dec[@]}" | pct 50); dmax=$(printf '%s\n' "${dec[@]}" | pct 100)
  cpu_pct=$(awk -v c="$cpu_sum" -v n="$n" -v t="$ticks" -v a="$t0" -v b="$t2" 'BEGIN { printf "%.1f", 100 * c / t / n / (b - a) }')
  cpu_sess=$(awk -v c="$cpu_sum" -v s="$sessions" -v t="$ticks" 'BEGIN { printf "%.2f", 1000 * c / t / s }')
  rss=$(printf '%s\n' "${rss_list[@]}" | pct 50); hwm=$(printf '%s\n' "${hwm_list[@]}" | pct 100)
  results+=("| $n | $sessions | $events | $all_events | $rate | $lag | $up50 / $up95 / $upmax | $d50 / $dmax | $cpu_pct% | $cpu_sess ms | $((rss / 1024)) / $((hwm / 1024)) MiB |")
  echo "bench-fleet: N=$n done: $sessions sessions in ${window}s" >&2
  stop_daemons
done

echo
echo "Fleet simulation: N sluiced daemons on one 2-core machine, one nats-server, one versitygw, one PostgreSQL; load ${DURATION}s per N, sessions of 1 SELECT and $DENIALS denied DROPs"
echo
echo "| N | sessions | denial events in stream | all events in stream | events/s into NATS | last event after load end (s) | seal->upload p50 / p95 / max (ms) | decision->effect p50 / max (ms) | CPU per daemon (% of a core) | daemon CPU per session | RSS per daemon median / peak HWM |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${results[@]}"
