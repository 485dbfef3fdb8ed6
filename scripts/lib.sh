# Shell helpers of the demos (scripts/demo.sh, scripts/demo-fleet.sh) and
# bench/fleet.sh. Source it after setting $me, the name errors start with.

# Step titles are bold on a terminal and plain text otherwise (a log, a
# pipe, CI). Numbered steps are the README's numbered claims, in order.
if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B="" N=""; fi
step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
run() { printf '$ %s\n' "$*"; "$@"; }

# wait_for DESC CMD...: run CMD until it succeeds, for at most $wait_secs
# seconds (default 10); fail, naming DESC, if it never does.
wait_for() {
  local desc=$1; shift
  local end=$((SECONDS + ${wait_secs:-10}))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { echo "$me: gave up waiting for $desc" >&2; exit 1; }
    sleep 0.05
  done
}

# free_port [PORT...]: a TCP port no socket uses (listening or
# connected), below the kernel's ephemeral range so an outgoing connection
# cannot take it before the listener binds, and not one of the ports given
# as arguments (chosen already, not bound yet).
free_port() {
  local p low
  read -r low _ < /proc/sys/net/ipv4/ip_local_port_range
  [ "$low" -gt 21000 ] || low=32768
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % (low - 20000)))
    case " $* " in *" $p "*) continue ;; esac
    ss -Htan "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
  echo "$me: no free port" >&2; exit 1
}

# start_postgres DIR PORT ADDRESSES [OPTION...]: a private PostgreSQL
# cluster in DIR/pg (trust authentication, log DIR/pg.log, socket in DIR)
# listening on ADDRESSES (comma-separated) and PORT, with extra server
# OPTIONs (-c name=value). DIR must be postgres's to write.
start_postgres() {
  local dir=$1 port=$2 addrs=$3; shift 3
  local pgbin
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  su postgres -s /bin/sh -c "$pgbin/initdb -D $dir/pg -U postgres -A trust --no-sync >/dev/null"
  su postgres -s /bin/sh -c "$pgbin/pg_ctl -D $dir/pg -l $dir/pg.log -w -o '-p $port -k $dir -c listen_addresses=$addrs $*' start >/dev/null"
}
