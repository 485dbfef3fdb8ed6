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

# issuer_start DIR: builds e2e/demoissuer into DIR and starts it, standing
# in for GitHub's OIDC issuer (its tokens name acme/api, main, run 1); sets
# issuer_pid and the issuer's ISSUER_URL, ISSUER_CA, TOKEN_URL and
# REQUEST_TOKEN. The caller stops it by its pid.
issuer_start() {
  local d=$1
  go build -o "$d/demoissuer" ./e2e/demoissuer
  "$d/demoissuer" -dir "$d" -claims '{"sub":"repo:acme/api:ref:refs/heads/main","repository":"acme/api","ref":"refs/heads/main","run_id":"1","actor":"bench"}' \
    > "$d/issuer.env" 2>&1 &
  issuer_pid=$!
  for _ in $(seq 200); do
    [ -s "$d/issuer.env" ] && break
    kill -0 "$issuer_pid" 2>/dev/null || break
    sleep 0.05
  done
  grep -q '^ISSUER_URL=' "$d/issuer.env" || { echo "bench: the OIDC issuer did not start:" >&2; cat "$d/issuer.env" >&2; exit 1; }
  eval "$(head -1 "$d/issuer.env")"
}

# identity_restart gives the running sluiced the identity block that
# trusts the issuer: the daemon reads its config only at start, so the
# block is appended and the daemon restarted (sets sluiced_pid).
identity_restart() {
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
