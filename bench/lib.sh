# Shared by bench/suite.sh and bench/pgbench.sh (sourced, not run).

# free_port prints a TCP port nothing listens on.
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 20000))
    ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return; }
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
