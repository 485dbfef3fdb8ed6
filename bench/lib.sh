# Shared by bench/suite.sh and bench/pgbench.sh (sourced, not run).

# free_port prints a TCP port no socket uses (see its comment).
free_port() {
  # A TCP port no socket uses (listening or connected), below the kernel's
  # ephemeral range so an outgoing connection cannot take it before the
  # listener binds, and not one of the ports given as arguments (chosen
  # already, not bound yet).
  local p low
  read -r low _ < /proc/sys/net/ipv4/ip_local_port_range
  [ "$low" -gt 21000 ] || low=32768
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % (low - 20000)))
    case " $* " in *" $p "*) continue ;; esac
    ss -Htan "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
  exit 1
}

# start_sluiced writes $work/sluiced.hcl (daemon $name on cgroup $cgroup,
# proxy on $proxy_port, rules from $work/rules, pprof on 127.0.0.1:6060
# when PPROF is set), starts $BIN/sluiced in the background, sets
# sluiced_pid and waits until its API answers.
start_sluiced() {
  local pprof_line=""
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
  for _ in $(seq 100); do "$BIN/sluice" status --socket "$work/sluiced.sock" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "bench: sluiced did not answer; see $work/sluiced.log" >&2
  exit 1
}
