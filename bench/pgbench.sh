#!/usr/bin/env bash
# pgbench -S through Sluice against direct, as ratios from one run.
#
# Starts a private PostgreSQL on 127.0.0.2 and sluiced on a private cgroup
# with the embedded default ruleset (its postgres target pointed at that
# server), then runs pgbench -S for each protocol mode and client count,
# direct and through Sluice, interleaved for ROUNDS rounds, and prints the
# median TPS of each, its min-max spread and the ratio. Run as root.
#
#   sudo bench/pgbench.sh            # ROUNDS=3 SECONDS_EACH=10 CLIENTS="1 8"
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 1; }
ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-10}
CLIENTS=${CLIENTS:-"1 8"}
MODES=${MODES:-"simple prepared"}
BIN=${BIN:-bin}
[ -x "$BIN/sluiced" ] || make build >/dev/null

free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 20000))
    ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
  exit 1
}
work=$(mktemp -d /tmp/sluice-bench.XXXXXX); chmod 755 "$work"
name="bench$$"; cgroup="sluice-bench-$$"
mount=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pg_port=$(free_port); proxy_port=$(free_port); sluiced_pid=""
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

mkdir -p "$mount/$cgroup" "$work/rules"
if [ "${PROTOCOL:-postgres}" = tcp ]; then
  # The opaque relay: the floor any proxy on this path pays.
  printf 'target "pg" {\n  protocol = "tcp"\n  address = ["127.0.0.2:%s"]\n}\npolicy "all" {\n  targets = ["pg"]\n}\n' "$pg_port" > "$work/rules/default.hcl"
else
  sed "s|\"\\*:5432\"|\"127.0.0.2:$pg_port\"|" ruleset/default.hcl > "$work/rules/default.hcl"
fi
pprof_line=""
[ -n "${PPROF:-}" ] && pprof_line='pprof_addr = "127.0.0.1:6060"'
cat > "$work/sluiced.hcl" <<HCL
name = "$name"
cgroup = "$cgroup"
proxy_port = $proxy_port
data_dir = "$work/data"
api_socket = "$work/sluiced.sock"
rules_dir = "$work/rules"
$pprof_line
log {
  level = "warn"
  format = "json"
}
HCL
"$BIN/sluiced" --config "$work/sluiced.hcl" > "$work/sluiced.log" 2>&1 &
sluiced_pid=$!
for _ in $(seq 100); do "$BIN/sluice" status --socket "$work/sluiced.sock" >/dev/null 2>&1 && break; sleep 0.1; done

run_pgbench() { # where mode clients
  local where=$1 mode=$2 c=$3 out
  local args=(-S -M "$mode" -c "$c" -j "$c" -T "$SECONDS_EACH" -n -h 127.0.0.2 -p "$pg_port" -U postgres postgres)
  if [ "$where" = sluice ]; then
    out=$(PGSSLMODE=disable "$BIN/sluice" run --cgroup "$cgroup" -- pgbench "${args[@]}" 2>&1)
  else
    out=$(PGSSLMODE=disable pgbench "${args[@]}" 2>&1)
  fi
  echo "$out" | awk '/^tps = / { print $3; exit }'
}

declare -A results
for r in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    for c in $CLIENTS; do
      for where in direct sluice; do
        tps=$(run_pgbench "$where" "$mode" "$c")
        results["$mode $c $where"]+="$tps "
        echo "round $r: -M $mode -c $c $where: $tps tps" >&2
      done
    done
  done
done

stats() { # values -> "median min max"
  printf '%s\n' $1 | sort -g | awk '{ v[NR] = $1 } END { printf "%.0f %.0f %.0f", v[int((NR + 1) / 2)], v[1], v[NR] }'
}
echo
echo "pgbench -S, ${SECONDS_EACH}s each, $ROUNDS interleaved rounds, median (min-max) TPS; Sluice with the default ruleset"
printf '| %-9s | %-7s | %-22s | %-22s | %-12s |\n' mode clients direct sluice "sluice/direct"
printf '|%s|%s|%s|%s|%s|\n' ----------- --------- ------------------------ ------------------------ --------------
for mode in $MODES; do
  for c in $CLIENTS; do
    read -r dm dmin dmax <<<"$(stats "${results["$mode $c direct"]}")"
    read -r sm smin smax <<<"$(stats "${results["$mode $c sluice"]}")"
    ratio=$(awk -v a="$sm" -v b="$dm" 'BEGIN { printf "%.2f", a / b }')
    printf '| %-9s | %-7s | %-22s | %-22s | %-12s |\n' "$mode" "$c" "$dm ($dmin-$dmax)" "$sm ($smin-$smax)" "$ratio"
  done
done
grep -c '"@level":"error"' "$work/sluiced.log" | xargs -I{} echo "sluiced errors logged: {}"
