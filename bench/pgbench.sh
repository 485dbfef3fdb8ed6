#!/usr/bin/env bash
# pgbench -S through Sluice against direct, as ratios from one run.
#
# Starts a private PostgreSQL on 127.0.0.2 and sluiced on a private cgroup
# with the embedded default ruleset (its postgres target pointed at that
# server), then runs pgbench -S for each protocol mode and client count,
# direct and through Sluice at each record level in RECORDS (the ruleset is
# hot-swapped between runs), interleaved for ROUNDS rounds, and prints the
# median TPS of each, its min-max spread, the ratio to direct and
# sluiced's CPU time per transaction. Run as root.
#
#   sudo bench/pgbench.sh   # ROUNDS=3 SECONDS_EACH=10 CLIENTS="1 8" MODES="simple prepared" RECORDS="full"
#   RECORDS="none full" ... # recording cost: the same ruleset recording nothing, then everything
#   WORKLOAD=bulk ...       # masked bulk read: SELECT * of a 20,000-row table with e-mail
#                           # addresses, in MB/s; RECORDS here names mask variants: nomask, mask
#                           # (a plain ruleset without and with a column mask), default (the
#                           # default ruleset, record = "commands", its bulk-export hold raised
#                           # out of reach as in make bench: its result check still runs)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 1; }
ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-10}
CLIENTS=${CLIENTS:-"1 8"}
MODES=${MODES:-"simple prepared"}
RECORDS=${RECORDS:-"full"}
BIN=${BIN:-bin}
[ -x "$BIN/sluiced" ] || make build >/dev/null

# shellcheck source=bench/lib.sh
. bench/lib.sh # the cd above put us at the repository root
work=$(mktemp -d /tmp/sluice-bench.XXXXXX); chmod 755 "$work"
name="bench$$"; cgroup="sluice-bench-$$"
mount=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pg_port=$(free_port); proxy_port=$(free_port "$pg_port"); sluiced_pid=""
cleanup() {
  set +e
  [ -n "$sluiced_pid" ] && kill "$sluiced_pid" && wait "$sluiced_pid" 2>/dev/null
  "$BIN/sluice" uninstall --name "$name" >/dev/null
  su postgres -s /bin/sh -c "$pgbin/pg_ctl -D $work/pg -m immediate stop" >/dev/null 2>&1
  rmdir "$mount/$cgroup" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

chown postgres "$work"
su postgres -s /bin/sh -c "$pgbin/initdb -D $work/pg -U postgres -A trust --no-sync >/dev/null"
printf 'local all all trust\nhost all all 0.0.0.0/0 trust\n' > "$work/pg/pg_hba.conf"
su postgres -s /bin/sh -c "$pgbin/pg_ctl -D $work/pg -l $work/pg.log -w -o '-p $pg_port -k $work -c listen_addresses=127.0.0.2 -c max_connections=100 -c fsync=off' start >/dev/null"
pgbench -i -s 10 -q -h "$work" -p "$pg_port" -U postgres postgres >/dev/null 2>&1
WORKLOAD=${WORKLOAD:-select}
if [ "$WORKLOAD" = bulk ]; then
  psql -X -q -h "$work" -p "$pg_port" -U postgres -c "create table people as select i as id, 'person'||i||'@example.com' as email, md5(i::text) as token, repeat('x', 120) as payload from generate_series(1, 20000) i" postgres
  echo 'SELECT * FROM people;' > "$work/bulk.sql"
  row_bytes=$(psql -X -At -h "$work" -p "$pg_port" -U postgres -c "select sum(length(id::text)+length(email)+length(token)+length(payload)) from people" postgres)
fi

mkdir -p "$mount/$cgroup" "$work/rules"
if [ "${PROTOCOL:-postgres}" = tcp ]; then
  # The opaque relay: the floor any proxy on this path pays.
  printf 'target "pg" {\n  protocol = "tcp"\n  address = ["127.0.0.2:%s"]\n}\npolicy "all" {\n  targets = ["pg"]\n}\n' "$pg_port" > "$work/rules/default.hcl"
else
  sed "s|\"\\*:5432\"|\"127.0.0.2:$pg_port\"|" ruleset/default.hcl > "$work/default.hcl"
  if [ "$WORKLOAD" = bulk ]; then
    sed -e "s|record  = \"full\"|record  = \"commands\"|" -e "s|result.rows > 10000|result.rows > 1000000000|" "$work/default.hcl" > "$work/builtin.hcl"
    # A plain ruleset, with and without a column mask on people.email.
    printf 'target "pg" {\n  protocol = "postgres"\n  address = ["127.0.0.2:%s"]\n}\npolicy "bench" {\n  targets = ["pg"]\n  record = "commands"\n  mask "email" {\n    columns = ["people.email"]\n    using = "hash"\n  }\n}\n' "$pg_port" > "$work/default.hcl"
  fi
  cp "$work/default.hcl" "$work/rules/default.hcl"
fi
# set_record LEVEL: swap in the default ruleset recording at LEVEL and wait
# until the daemon runs it.
set_record() {
  [ "${PROTOCOL:-postgres}" = tcp ] && return
  local gen
  gen=$("$BIN/sluice" status --json --socket "$work/sluiced.sock" | awk -F': ' '/"generation"/ { gsub(/,/, "", $2); print $2; exit }')
  case "$1" in
    nomask) sed '/mask "email"/,/^  }/d' "$work/default.hcl" > "$work/rules/default.hcl.new" ;;
    mask) cp "$work/default.hcl" "$work/rules/default.hcl.new" ;;
    default) cp "$work/builtin.hcl" "$work/rules/default.hcl.new" ;;
    *) sed "s|record *= *\"full\"|record = \"$1\"|" "$work/default.hcl" > "$work/rules/default.hcl.new" ;;
  esac
  cmp -s "$work/rules/default.hcl.new" "$work/rules/default.hcl" && { rm "$work/rules/default.hcl.new"; return; }
  mv "$work/rules/default.hcl.new" "$work/rules/default.hcl"
  for _ in $(seq 100); do
    "$BIN/sluice" status --json --socket "$work/sluiced.sock" | grep -q "\"generation\": $((gen + 1))" && return
    sleep 0.05
  done
  echo "bench: the daemon did not pick up record = $1" >&2; exit 1
}
start_sluiced

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$sluiced_pid/stat"; }
# run_pgbench prints the TPS (MB/s for bulk) and, through Sluice, appends
# sluiced's CPU ticks and the transactions to $work/cpu.
run_pgbench() { # where mode clients
  local where=$1 mode=$2 c=$3 out before
  local args=(-S -M "$mode" -c "$c" -j "$c" -T "$SECONDS_EACH" -n -h 127.0.0.2 -p "$pg_port" -U postgres postgres)
  [ "$WORKLOAD" = bulk ] && args=(-f "$work/bulk.sql" -M "$mode" -c "$c" -j "$c" -T "$SECONDS_EACH" -n -h 127.0.0.2 -p "$pg_port" -U postgres postgres)
  if [ "$where" = sluice ]; then
    before=$(cpu_ticks)
    out=$(PGSSLMODE=disable "$BIN/sluice" run --cgroup "$cgroup" -- pgbench "${args[@]}" 2>&1)
    echo "$mode $c $(($(cpu_ticks) - before)) $(echo "$out" | awk '/number of transactions actually processed/ { print $NF }')" >> "$work/cpu"
  else
    out=$(PGSSLMODE=disable pgbench "${args[@]}" 2>&1)
  fi
  echo "$out" | awk -v rb="${row_bytes:-0}" -v bulk="$WORKLOAD" '/^tps = / { if (bulk == "bulk") printf "%.1f\n", $3 * rb / 1e6; else print $3; exit }'
}

declare -A results cpu
variants="direct"
for rec in $RECORDS; do variants+=" sluice:$rec"; done
for r in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    for c in $CLIENTS; do
      for v in $variants; do
        where=${v%%:*}
        [ "$where" = sluice ] && set_record "${v#*:}"
        tps=$(run_pgbench "$where" "$mode" "$c")
        [ "$where" = sluice ] && cpu["$mode $c $v"]+="$(tail -1 "$work/cpu" | cut -d' ' -f3-4) "
        results["$mode $c $v"]+="$tps "
        echo "round $r: -M $mode -c $c $v: $tps tps" >&2
      done
    done
  done
done

stats() { # values -> "median min max"
  printf '%s\n' $1 | sort -g | awk '{ v[NR] = $1 } END { printf "%.0f %.0f %.0f", v[int((NR + 1) / 2)], v[1], v[NR] }'
}
echo
if [ "$WORKLOAD" = bulk ]; then
  echo "SELECT * FROM people (20,000 rows, ${row_bytes} bytes of values), ${SECONDS_EACH}s each, $ROUNDS interleaved rounds, median (min-max) MB/s of values"
else
  echo "pgbench -S, ${SECONDS_EACH}s each, $ROUNDS interleaved rounds, median (min-max) TPS; Sluice with the default ruleset (${PROTOCOL:-postgres})"
fi
printf '| %-9s | %-7s | %-14s | %-22s | %-22s | %-6s | %-12s |\n' mode clients variant direct sluice ratio "proxy CPU/tx"
printf '|%s|%s|%s|%s|%s|%s|%s|\n' ----------- --------- ---------------- ------------------------ ------------------------ -------- --------------
for mode in $MODES; do
  for c in $CLIENTS; do
    read -r dm dmin dmax <<<"$(stats "${results["$mode $c direct"]}")"
    for v in $variants; do
      [ "$v" = direct ] && continue
      read -r sm smin smax <<<"$(stats "${results["$mode $c $v"]}")"
      ratio=$(awk -v a="$sm" -v b="$dm" 'BEGIN { printf "%.2f", a / b }')
      # shellcheck disable=SC2086
      cpt=$(printf '%s %s\n' ${cpu["$mode $c $v"]} | awk -v hz="$hz" '{ t += $1; n += $2 } END { if (n > 0) printf "%.1f us", t / hz * 1e6 / n; else print "-" }')
      printf '| %-9s | %-7s | %-14s | %-22s | %-22s | %-6s | %-12s |\n' "$mode" "$c" "${v#*:}" "$dm ($dmin-$dmax)" "$sm ($smin-$smax)" "$ratio" "$cpt"
    done
  done
done
grep -c '"@level":"error"' "$work/sluiced.log" | xargs -I{} echo "sluiced errors logged: {}"
