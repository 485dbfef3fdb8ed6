# The MySQL part of bench/suite.sh (sourced, not run): a private MariaDB
# with sysbench's tables, and sysbench runs in the suite's modes.
#
# MariaDB listens on 127.0.0.7 and 127.0.0.8 (port $my_port). The suite's
# ruleset points its mysql target (decoded as MySQL once the build has a
# MySQL decoder; relayed undecoded before that) at 127.0.0.7 and a tcp
# target at 127.0.0.8. Modes:
#   direct     sysbench straight to 127.0.0.7 (outside the cgroup)
#   opaque     through Sluice's opaque TCP relay (127.0.0.8)
#   commands   through the mysql target, default ruleset, record = "commands"
# sysbench uses server-side prepared statements where it can (MY_PS=disable
# sends every query as text) over 4 tables of 10,000 rows.

MY_MODES="direct opaque commands"
my_host=127.0.0.7; my_opaque_host=127.0.0.8
my_pid=""; my_port=""; my_version=""
my_sysbench=(--db-driver=mysql --mysql-user=sbtest --mysql-password=sbtest --mysql-db=sbtest
  --mysql-ssl=off --tables=4 --table-size=10000 --db-ps-mode="${MY_PS:-auto}")

# my_wanted: whether ONLY selects any MySQL workload.
my_wanted() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" my-"* ]]; }

# my_start starts MariaDB as the mysql user in $work/my on a free port,
# waits until root logs in over its socket, and prepares sysbench's tables.
# Sets my_port, my_pid and my_version; my_stop (from the suite's cleanup) stops it.
my_start() {
  command -v sysbench >/dev/null && command -v mariadbd >/dev/null ||
    { echo "bench: MySQL workloads need mariadb-server and sysbench (make deps)" >&2; exit 1; }
  my_port=$(free_port "$@")
  mkdir "$work/my"; chown mysql: "$work/my"
  # Both the bootstrap and the server: unsynced, no host name lookups.
  local base=(--datadir="$work/my/data" --user=mysql --skip-name-resolve
    --character-set-server=utf8mb4 --innodb-buffer-pool-size=256M --innodb-log-file-size=64M
    --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0)
  mariadb-install-db --no-defaults --auth-root-authentication-method=socket --skip-test-db \
    "${base[@]}" > "$work/my-install.log" 2>&1 ||
    { cat "$work/my-install.log" >&2; exit 1; }
  mariadbd --no-defaults "${base[@]}" --socket="$work/my/sock" --pid-file="$work/my/pid" \
    --port="$my_port" --bind-address="$my_host,$my_opaque_host" --log-error="$work/my/error.log" \
    --max-connections=500 > "$work/my/server.out" 2>&1 &
  my_pid=$!
  for _ in $(seq 300); do
    kill -0 "$my_pid" 2>/dev/null || break
    my_admin -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.1
  done
  my_admin -e 'SELECT 1' >/dev/null 2>&1 ||
    { echo "bench: MariaDB did not start" >&2; cat "$work/my/server.out" "$work/my/error.log" >&2; exit 1; }
  my_version=$(my_admin --skip-column-names -e 'SELECT VERSION()')
  my_admin -e "CREATE DATABASE sbtest; CREATE USER sbtest@'%' IDENTIFIED BY 'sbtest';
    GRANT ALL ON sbtest.* TO sbtest@'%';"
  sysbench oltp_read_only "${my_sysbench[@]}" --mysql-host="$my_host" --mysql-port="$my_port" \
    prepare > "$work/my-prepare.log" 2>&1 || { cat "$work/my-prepare.log" >&2; exit 1; }
}

# my_admin ARGS...: the mariadb client as root over the server's socket.
my_admin() { mariadb --no-defaults --protocol=socket --socket="$work/my/sock" --user=root --batch "$@"; }

# my_stop stops the server the suite started, by its pid.
my_stop() {
  [ -n "$my_pid" ] || return 0
  kill "$my_pid" 2>/dev/null && wait "$my_pid" 2>/dev/null
  my_pid=""
}

# my_ruleset: the suite's ruleset additions for MySQL (stdin: the ruleset
# so far; stdout: it with the mysql target on 127.0.0.7 and an opaque tcp
# target on 127.0.0.8).
my_ruleset() {
  if [ -z "$my_port" ]; then cat; return; fi
  local rules
  rules=$(sed -e "s|address *= \\[\"\\*:3306\"\\]|address = [\"$my_host:$my_port\"]|")
  # A mysql target that missed the substitution would leave the commands
  # mode going direct, and the table would show it as free.
  grep -q "\"$my_host:$my_port\"" <<<"$rules" ||
    { echo "bench: the default ruleset's mysql target (*:3306) was not found" >&2; exit 1; }
  printf '%s\n' "$rules"
  printf 'target "opaque-mysql" {\n  protocol = "tcp"\n  address  = ["%s:%s"]\n}\n' "$my_opaque_host" "$my_port"
}

# my_run MODE TEST THREADS: runs sysbench TEST with THREADS threads for
# SECONDS_EACH and prints "tps transactions proxy_cpu_ticks qps queries".
my_run() {
  local mode=$1 test=$2 threads=$3 host=$my_host wrap=() pid=""
  case "$mode" in
    opaque) host=$my_opaque_host; wrap=("$BIN/sluice" run --cgroup "$cgroup" --); pid=$sluiced_pid ;;
    commands) wrap=("$BIN/sluice" run --cgroup "$cgroup" --); pid=$sluiced_pid ;;
  esac
  local before=0 after=0 out n
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  probe_start "$pid"
  out=$("${wrap[@]}" sysbench "$test" "${my_sysbench[@]}" --mysql-host="$host" --mysql-port="$my_port" \
    --threads="$threads" --time="$SECONDS_EACH" run 2>&1) ||
    { echo "bench: sysbench $test ($mode) failed:" >&2; echo "$out" >&2; exit 1; }
  [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  n=$(echo "$out" | awk '$1 == "queries:" { print $2 }')
  probe_end "$n" query
  # "transactions: 12345 (3086.10 per sec.)", "queries: ..." likewise.
  echo "$out" | awk -v t=$((after - before)) '
    $1 == "transactions:" { n = $2; tps = substr($3, 2) }
    $1 == "queries:" { nq = $2; qps = substr($3, 2) }
    END { printf "%s %s %s %s %s\n", tps, n, t, qps, nq }'
}

# my_workload KEY MODES TEST THREADS: bench_workload with my_run.
my_workload() { local runner=my_run; bench_workload "$@"; }

# my_table KEY TITLE MODES: the table of one MySQL workload: TPS and QPS
# medians, the ratio to direct, and the proxy's CPU time per query.
my_table() {
  local key=$1 title=$2 modes=$3
  wanted "$key" || return 0
  [ -n "${R["$key direct"]:-}" ] || return 0
  local dm; read -r dm _ _ <<<"$(stats "${R["$key direct"]}")"
  echo
  echo "$title"
  printf '| %-11s | %-24s | %-10s | %-8s | %-15s |\n' mode "TPS median (min-max)" "QPS median" "/direct" "proxy CPU/query"
  printf '|%s|%s|%s|%s|%s|\n' ------------- -------------------------- ------------ ---------- -----------------
  for m in $modes; do
    [ -n "${R["$key $m"]:-}" ] || continue
    local md mmin mmax qm cpu="-"
    read -r md mmin mmax <<<"$(stats "${R["$key $m"]}")"
    read -r qm _ _ <<<"$(stats "${Q["$key $m"]}")"
    if [ "$m" != direct ]; then
      cpu=$(paste -d' ' <(printf '%s\n' ${CPU["$key $m"]}) <(printf '%s\n' ${NQ["$key $m"]}) |
        awk -v hz="$hz" '{ t += $1; n += $2 } END { if (n > 0) printf "%.1f us", t / hz * 1e6 / n; else print "-" }')
    fi
    printf '| %-11s | %-24s | %-10s | %-8s | %-15s |\n' "$m" "$md ($mmin-$mmax)" "$qm" \
      "$(awk -v a="$md" -v b="$dm" 'BEGIN { printf "%.2f", a / b }')" "$cpu"
  done
}

# my_latency KEY: the latency each proxied mode adds to a query, from the
# median QPS at one thread.
my_latency() {
  local key=$1 dq line="" m q
  [ -n "${Q["$key direct"]:-}" ] || return 0
  read -r dq _ _ <<<"$(stats "${Q["$key direct"]}")"
  for m in opaque commands; do
    [ -n "${Q["$key $m"]:-}" ] || continue
    read -r q _ _ <<<"$(stats "${Q["$key $m"]}")"
    line+="$(awk -v m="$m" -v d="$dq" -v s="$q" 'BEGIN { printf "; %s %.0f us", m, (1e6 / s - 1e6 / d) }')"
  done
  [ -n "$line" ] && echo "Added latency per query at 1 thread ($key), over direct: ${line#; }"
  return 0
}
