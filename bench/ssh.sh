# The SSH part of bench/suite.sh (sourced, not run): a private OpenSSH
# sshd, a local OIDC issuer, and scp and ssh runs in the suite's modes.
#
# sshd listens on 127.0.0.9 (port $ssh_port) with a host key of its own,
# trusts one SSH user CA (TrustedUserCAKeys) and lets root log in with a
# certificate of that CA, nothing else. The suite's ruleset gets an ssh
# target for it whose credential is that CA's key: Sluice takes the job's
# ssh without authentication, mints a certificate for each session and
# logs in to sshd itself. Credentials go only to flows with a verified
# OIDC identity, so the proxied runs are a GitHub job: a copy of sh named
# Runner.Worker, in the hooked cgroup, that can ask a local issuer
# (e2e/demoissuer) for a token of acme/api. Modes:
#   direct     ssh and scp straight to sshd (outside the cgroup), logging
#              in with a key and a certificate of the same CA
#   commands   the same commands from the job, through the ssh target;
#              default ruleset, record = "commands"
# Workloads:
#   ssh-scp    scp of a 200 MB file to sshd with OpenSSH's default
#              protocol, SFTP, which Sluice terminates and decides file by file
#   ssh-scp-O  the same with scp -O: an exec of scp -t, relayed as a stream
#   ssh-exec   SSH_EXECS (500) sequential `ssh root@127.0.0.9 true`
# The issue's targets: scp at least 0.8x direct throughput, at most 20 ms
# added per exec. The tables say whether this run met them.
# SSH_EXTRA_OPTS adds client options to both modes, for example
# SSH_EXTRA_OPTS="-c aes128-gcm@openssh.com" to compare ciphers.

SSH_MODES="direct commands"
SSH_EXECS=${SSH_EXECS:-500}
ssh_host=127.0.0.9
ssh_port=""; ssh_dir=""; ssh_sshd_pid=""; ssh_sshd_ns=""; ssh_issuer_pid=""; ssh_version=""
ssh_bytes=200000000

# ssh_wanted: whether ONLY selects any SSH workload.
ssh_wanted() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" ssh-"* ]]; }

# ssh_start PORTS...: starts sshd on a free port (none of PORTS), the
# OIDC issuer, and writes the keys, certificates, known_hosts files and
# the 200 MB payload in $work/ssh. Sets ssh_port, ssh_sshd_pid,
# ssh_sshd_ns and ssh_issuer_pid; ssh_stop (from the suite's cleanup)
# stops them.
ssh_start() {
  command -v ssh >/dev/null && command -v scp >/dev/null && [ -x /usr/sbin/sshd ] ||
    { echo "bench: SSH workloads need openssh-client and openssh-server (make deps)" >&2; exit 1; }
  ssh_port=$(free_port "$@")
  ssh_dir=$work/ssh
  local d=$ssh_dir
  mkdir "$d"
  ssh_version=$(ssh -V 2>&1 | awk '{ sub(/,$/, "", $1); print $1 }')

  # Keys: sshd's host key; the user CA sshd trusts, whose private key is
  # Sluice's credential (root's, 0600, as Sluice requires of secret
  # files); the direct client's key with a certificate of that CA for
  # root, so both modes log in the same way.
  ssh-keygen -q -t ed25519 -N '' -C bench-sshd -f "$d/host_key"
  ssh-keygen -q -t ed25519 -N '' -C bench-user-ca -f "$d/user_ca"
  ssh-keygen -q -t ed25519 -N '' -C bench-direct -f "$d/client"
  ssh-keygen -q -s "$d/user_ca" -I bench-direct -n root -V -5m:+1d "$d/client.pub"
  printf '[%s]:%s %s\n' "$ssh_host" "$ssh_port" "$(cut -d' ' -f1,2 "$d/host_key.pub")" > "$d/known_hosts"

  # sshd needs its privilege separation directory. Left in place: it is
  # Debian's sshd's own path, which another sshd may be using.
  [ -d /run/sshd ] || mkdir -m 755 /run/sshd
  cat > "$d/sshd_config" <<CONF
ListenAddress $ssh_host:$ssh_port
HostKey $d/host_key
PidFile none
LogLevel ERROR
PermitRootLogin prohibit-password
TrustedUserCAKeys $d/user_ca.pub
AuthorizedKeysFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
Subsystem sftp internal-sftp
CONF
  # sshd runs in a mount namespace of its own, where root's home is an
  # empty directory of the bench's: bash sources ~/.bashrc for every
  # command sshd runs, and the machine's root may have one that costs more
  # than the login (pyenv init, say). There /etc/shadow holds root alone,
  # with "*" (no password, not locked): with UsePAM no, sshd refuses every
  # login to an account whose password starts with "!", as root's does on
  # many machines. The machine's files are untouched. unshare and sh exec,
  # so the pid is sshd's; the namespace is also how ssh_stop finds the
  # sessions, which leave sshd's process group.
  mkdir -m 700 "$d/root"
  sed "s|^root:.*|root:x:0:0:root:$d/root:/bin/bash|" /etc/passwd > "$d/passwd"
  printf 'root:*:::::::\n' > "$d/shadow"; chmod 600 "$d/shadow"
  unshare --mount --propagation private -- sh -c \
    'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/shadow && exec /usr/sbin/sshd -D -e -f "$3"' \
    sh "$d/passwd" "$d/shadow" "$d/sshd_config" > "$d/sshd.log" 2>&1 &
  ssh_sshd_pid=$!
  for _ in $(seq 100); do
    ss -Htln "sport = :$ssh_port" | grep -qF "$ssh_host:$ssh_port" && break
    kill -0 "$ssh_sshd_pid" 2>/dev/null || break
    sleep 0.05
  done
  ss -Htln "sport = :$ssh_port" | grep -qF "$ssh_host:$ssh_port" ||
    { echo "bench: sshd did not listen on $ssh_host:$ssh_port:" >&2; cat "$d/sshd.log" >&2; exit 1; }
  ssh_sshd_ns=$(readlink "/proc/$ssh_sshd_pid/ns/mnt")

  # The OIDC issuer, standing in for GitHub's (bench/lib.sh).
  issuer_start "$d"
  ssh_issuer_pid=$issuer_pid
  cp /bin/sh "$d/Runner.Worker"

  head -c "$ssh_bytes" /dev/urandom > "$d/payload"
}

# ssh_stop stops the sshd and the issuer the suite started, by their pids,
# and any connection or session of that sshd still running (a bench
# interrupted mid-run): the processes in sshd's mount namespace.
ssh_stop() {
  if [ -n "$ssh_sshd_pid" ]; then
    kill "$ssh_sshd_pid" 2>/dev/null && wait "$ssh_sshd_pid" 2>/dev/null
    local p
    [ -n "$ssh_sshd_ns" ] && for p in /proc/[0-9]*; do
      [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$ssh_sshd_ns" ] && kill "${p#/proc/}" 2>/dev/null
    done
  fi
  [ -n "$ssh_issuer_pid" ] && kill "$ssh_issuer_pid" 2>/dev/null && wait "$ssh_issuer_pid" 2>/dev/null
  ssh_sshd_pid=""; ssh_issuer_pid=""
  return 0
}

# ssh_ruleset RECORD: the suite's ruleset additions for SSH (none when no
# SSH workload runs): the ssh target with its certificate credential, and
# a policy that grants it to jobs of acme/api at the record level RECORD.
# The default ruleset's baseline policy covers the target too; none of its
# SSH rules fires on scp or `true`.
ssh_ruleset() {
  [ -n "$ssh_port" ] || return 0
  cat <<HCL
target "bench-ssh" {
  protocol    = "ssh"
  address     = ["$ssh_host:$ssh_port"]
  known_hosts = "$ssh_dir/known_hosts"
  credential "root" {
    user     = "root"
    ssh_auth = "certificate"
    key_file = "$ssh_dir/user_ca"
    policies = ["bench-ssh"]
  }
}
policy "bench-ssh" {
  targets = ["bench-ssh"]
  when    = identity.repository == "acme/api"
  record  = "$1"
  credential "root" {}
}
HCL
}

# ssh_identity gives the running sluiced the identity block that trusts
# the bench's issuer, and writes the known_hosts line that makes the job's
# ssh trust Sluice's host CA. The daemon reads its config only at start,
# and start_sluiced (bench/lib.sh) writes no identity block, so the block
# is appended and the daemon restarted.
ssh_identity() {
  identity_restart
  # What sluice install puts in /etc/ssh/ssh_known_hosts, in a file of the
  # bench's: the job's ssh reads it as its GlobalKnownHostsFile.
  "$BIN/sluice" ssh-ca --config "$work/sluiced.hcl" 2>/dev/null | awk 'NR == 1' > "$ssh_dir/sluice_known_hosts"
  grep -q '^@cert-authority ' "$ssh_dir/sluice_known_hosts" ||
    { echo "bench: sluice ssh-ca printed no @cert-authority line" >&2; exit 1; }
}

# ssh_opts MODE: the client's options: no user config, strict host key
# checking against sshd's key (direct) or Sluice's host CA (commands);
# direct logs in with its certificate alone (as Sluice does upstream), the
# job with nothing. Both modes use the key exchange Sluice's hops
# negotiate, curve25519-sha256: x/crypto/ssh lacks OpenSSH 9.x's default,
# sntrup761x25519-sha512, which makes a direct login here some 60 ms
# slower and would flatter Sluice.
ssh_opts() {
  local o="-F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/dev/null -o KexAlgorithms=curve25519-sha256 ${SSH_EXTRA_OPTS:-}"
  case "$1" in
    direct) echo "$o -o GlobalKnownHostsFile=$ssh_dir/known_hosts -o IdentitiesOnly=yes -i $ssh_dir/client -o PubkeyAcceptedAlgorithms=ssh-ed25519-cert-v01@openssh.com" ;;
    *) echo "$o -o GlobalKnownHostsFile=$ssh_dir/sluice_known_hosts" ;;
  esac
}

# ssh_job SCRIPT: runs SCRIPT with sh as a GitHub job of acme/api, in the
# hooked cgroup, under a Runner.Worker that may request an ID token.
ssh_job() {
  ACTIONS_ID_TOKEN_REQUEST_URL="$TOKEN_URL" ACTIONS_ID_TOKEN_REQUEST_TOKEN="$REQUEST_TOKEN" \
    "$BIN/sluice" run --cgroup "$cgroup" -- "$ssh_dir/Runner.Worker" -c "$1"
}

# ssh_run MODE WHAT: one run of WHAT (scp, scp-O or exec) in MODE. Prints
# "rate units proxy_cpu_ticks": for scp the rate is kB/s and the units MB
# sent; for exec the rate is microseconds per exec and the units execs.
ssh_run() {
  local mode=$1 what=$2 opts script pid="" wrap=(sh -c) unit
  opts=$(ssh_opts "$mode")
  [ "$mode" = direct ] || { wrap=(ssh_job); pid=$sluiced_pid; }
  case "$what" in
    scp) script="scp -q $opts -P $ssh_port $ssh_dir/payload root@$ssh_host:$ssh_dir/upload"; unit=MB ;;
    scp-O) script="scp -q -O $opts -P $ssh_port $ssh_dir/payload root@$ssh_host:$ssh_dir/upload"; unit=MB ;;
    exec) script="for i in \$(seq $SSH_EXECS); do ssh $opts -p $ssh_port root@$ssh_host true || exit 1; done"; unit=exec ;;
  esac
  local before=0 after=0 t0 t1 out n
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  probe_start "$pid"
  t0=$(date +%s%N)
  out=$("${wrap[@]}" "$script" 2>&1) || { echo "bench: $what ($mode) failed:" >&2; echo "$out" >&2; exit 1; }
  t1=$(date +%s%N)
  [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  if [ "$unit" = MB ]; then
    local got; got=$(stat -c %s "$ssh_dir/upload" 2>/dev/null || echo none)
    rm -f "$ssh_dir/upload"
    [ "$got" = "$ssh_bytes" ] || { echo "bench: $what ($mode) left $got bytes on the host, not $ssh_bytes" >&2; exit 1; }
    n=$((ssh_bytes / 1000000))
  else
    n=$SSH_EXECS
  fi
  probe_end "$n" "$unit"
  awk -v ns=$((t1 - t0)) -v b="$ssh_bytes" -v n="$n" -v unit="$unit" -v t=$((after - before)) 'BEGIN {
    if (unit == "MB") printf "%.0f %d %d\n", b / (ns / 1e9) / 1e3, n, t
    else printf "%.0f %d %d\n", ns / 1e3 / n, n, t }'
}

# ssh_workload KEY WHAT: bench_workload with ssh_run.
ssh_workload() { local runner=ssh_run; bench_workload "$1" "$SSH_MODES" "$2"; }

# ssh_cpu KEY MODE: the proxy's CPU time per unit over all rounds, in ms.
ssh_cpu() {
  paste -d' ' <(printf '%s\n' ${CPU["$1 $2"]}) <(printf '%s\n' ${N["$1 $2"]}) |
    awk -v hz="$hz" '{ t += $1; n += $2 } END { if (n > 0) printf "%.2f ms", t / hz * 1e3 / n; else print "-" }'
}

# ssh_tables: the scp table (both protocols) and the exec table, each with
# the issue's target and whether this run met it.
ssh_tables() {
  local key m md mmin mmax dm proto line ratio="" added=""
  if [ -n "${R["ssh-scp direct"]:-}${R["ssh-scp-O direct"]:-}" ]; then
    echo
    echo "scp of a 200 MB file to sshd ($ssh_version; target: Sluice at least 0.8x direct)"
    printf '| %-20s | %-24s | %-8s | %-14s |\n' mode "MB/s median (min-max)" "/direct" "proxy CPU/MB"
    printf '|%s|%s|%s|%s|\n' ---------------------- -------------------------- ---------- ----------------
    for key in ssh-scp ssh-scp-O; do
      [ -n "${R["$key direct"]:-}" ] || continue
      proto="SFTP"; [ "$key" = ssh-scp-O ] && proto="scp -O"
      read -r dm _ _ <<<"$(stats "${R["$key direct"]}")"
      for m in $SSH_MODES; do
        [ -n "${R["$key $m"]:-}" ] || continue
        read -r md mmin mmax <<<"$(stats "${R["$key $m"]}")"
        line=$(awk -v a="$md" -v b="$dm" 'BEGIN { printf "%.2f", a / b }')
        [ "$key $m" = "ssh-scp commands" ] && ratio=$line
        printf '| %-20s | %-24s | %-8s | %-14s |\n' "$m ($proto)" \
          "$(awk -v a="$md" -v b="$mmin" -v c="$mmax" 'BEGIN { printf "%.1f (%.1f-%.1f)", a / 1e3, b / 1e3, c / 1e3 }')" \
          "$line" "$([ "$m" = direct ] && echo - || ssh_cpu "$key" "$m")"
      done
    done
    [ -n "$ratio" ] && echo "scp target (SFTP, commands >= 0.80x direct): $(awk -v r="$ratio" 'BEGIN { print (r >= 0.8 ? "met" : "missed") }') at ${ratio}x"
  fi
  if [ -n "${R["ssh-exec direct"]:-}" ]; then
    read -r dm _ _ <<<"$(stats "${R["ssh-exec direct"]}")"
    echo
    echo "$SSH_EXECS sequential \`ssh host true\` ($ssh_version; a new connection, login and exec each; target: at most 20 ms added per exec)"
    printf '| %-11s | %-24s | %-10s | %-14s |\n' mode "ms/exec median (min-max)" "added" "proxy CPU/exec"
    printf '|%s|%s|%s|%s|\n' ------------- -------------------------- ------------ ----------------
    for m in $SSH_MODES; do
      [ -n "${R["ssh-exec $m"]:-}" ] || continue
      read -r md mmin mmax <<<"$(stats "${R["ssh-exec $m"]}")"
      line="-"
      if [ "$m" != direct ]; then
        line=$(awk -v a="$md" -v b="$dm" 'BEGIN { printf "%+.1f ms", (a - b) / 1e3 }')
        added=$(awk -v a="$md" -v b="$dm" 'BEGIN { printf "%.1f", (a - b) / 1e3 }')
      fi
      printf '| %-11s | %-24s | %-10s | %-14s |\n' "$m" \
        "$(awk -v a="$md" -v b="$mmin" -v c="$mmax" 'BEGIN { printf "%.1f (%.1f-%.1f)", a / 1e3, b / 1e3, c / 1e3 }')" \
        "$line" "$([ "$m" = direct ] && echo - || ssh_cpu ssh-exec "$m")"
    done
    [ -n "$added" ] && echo "exec target (at most 20 ms added per exec): $(awk -v a="$added" 'BEGIN { print (a <= 20 ? "met" : "missed") }') at $added ms"
  fi
  return 0
}
