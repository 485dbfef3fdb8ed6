#!/usr/bin/env bash
# The README's demo: a private PostgreSQL on 127.0.0.2, sluiced hooked to a
# private cgroup, and psql inside that cgroup reaching the database through
# Sluice without being told; a private dockerd whose containers, started by
# a job, get the same; a root job that leaves its cgroup, still intercepted
# and reported; a job's ssh to a private sshd on 127.0.0.5, which Sluice
# logs in to with a certificate minted for the job, deciding every command;
# a job's kubectl to a private Kubernetes API server on 127.0.0.1, with a
# service account token only Sluice holds, every request decided.
# Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "demo: run as root (sudo make demo): it attaches eBPF programs to a cgroup it creates" >&2; exit 1; }
BIN=${BIN:-bin}
[ -x "$BIN/sluiced" ] && [ -x "$BIN/sluice" ] || { echo "demo: build first (make build)" >&2; exit 1; }

# Container jobs need Docker (dockerd, its client, containerd and runc) and
# a static busybox for the image's userland: the docker.io and
# busybox-static packages, which make deps installs. dockerd runs runc
# and containerd from the sbin directories.
for d in /usr/local/sbin /usr/sbin /sbin; do
  case ":$PATH:" in *":$d:"*) ;; *) PATH="$PATH:$d" ;; esac
done
missing_docker() { echo "demo: $1 not found: install the docker.io package (make deps does)" >&2; exit 1; }
dockerd_bin=$(command -v dockerd) || missing_docker dockerd
# The distribution's client, the same release as its dockerd, whatever
# comes first on PATH.
docker_cli=/usr/bin/docker
[ -x "$docker_cli" ] || docker_cli=$(command -v docker) || missing_docker "the docker client"
for b in containerd containerd-shim-runc-v2 runc; do command -v "$b" >/dev/null || missing_docker "$b"; done
busybox=$(command -v busybox) || { echo "demo: busybox not found: install the busybox-static package (make deps does)" >&2; exit 1; }
if ldd "$busybox" >/dev/null 2>&1; then echo "demo: $busybox is linked dynamically: install the busybox-static package" >&2; exit 1; fi
# The SSH step's host is OpenSSH's sshd (the openssh-server package),
# started by its absolute path: it re-executes itself for each connection.
sshd_bin=/usr/sbin/sshd
[ -x "$sshd_bin" ] || { echo "demo: $sshd_bin not found: install the openssh-server package (make deps does)" >&2; exit 1; }
for b in ssh ssh-keygen; do command -v "$b" >/dev/null || { echo "demo: $b not found: install the openssh-client package (make deps does)" >&2; exit 1; }; done
# The Kubernetes step's API server, etcd and kubectl (v1.37.2), built once
# into a cache by scripts/build-kube.sh (make deps runs it; about 20
# minutes on 2 cores): the demo only looks them up.
kube_bin=$(bash scripts/build-kube.sh --cached) || { echo "demo: kube-apiserver, etcd and kubectl are not built: run scripts/build-kube.sh (make deps does)" >&2; exit 1; }
# Two addresses this host does not have yet, put on lo for the demo and
# removed at its end: where PostgreSQL also listens for containers (in a
# container, 127.0.0.x is the container's own loopback), and sluiced's
# container address, where containers' redirected connects arrive.
ctr_db=198.19.254.73
ctr_proxy=198.19.255.73
for a in "$ctr_db" "$ctr_proxy"; do
  if ip -o addr show to "$a/32" | grep . >/dev/null; then
    echo "demo: $a is already an address of this machine (left by a demo that was killed?); remove it with: ip addr del $a/32 dev lo" >&2
    exit 1
  fi
done

me=demo
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# log_line MESSAGE [PATTERN]: the last line of sluiced's log with that
# message (and PATTERN), once it is there.
log_line() {
  wait_for "a \"$1\" line in sluiced's log" grep -q "\"@message\":\"$1\".*${2:-}" "$work/sluiced.log"
  grep "\"@message\":\"$1\".*${2:-}" "$work/sluiced.log" | tail -1
}
in_job() { "$BIN/sluice" run --cgroup "$cgroup" -- "$@"; }
run_job() { printf '$ sluice run --cgroup %s -- %s\n' "$cgroup" "$*"; in_job "$@"; }

work=$(mktemp -d /tmp/sluice-demo.XXXXXX)
chmod 755 "$work"
name="demo$$"
# sluiced's scope, a cgroup above the job cgroups (sluiced itself runs
# outside it): the runner's cgroup, where every job of the demo runs;
# Docker's cgroup parent beside it, a job cgroup as well; and a cgroup
# of no job's, where step 12's job flees to.
scope="sluice-demo-$$"
cgroup="$scope/runner"
ctr_cgroup="$scope/containers"
elsewhere="$scope/elsewhere"
dk="$work/docker"
dk_sock="$dk/docker.sock"
image="sluice-demo/psql:1"
net="sluice-demo-$$"
mount=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
[ -n "$mount" ] || { echo "demo: no cgroup2 mount found" >&2; exit 1; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pg_port=$(free_port)
proxy_port=$(free_port "$pg_port")
metrics_port=$(free_port "$pg_port" "$proxy_port")
my_port=$(free_port "$pg_port" "$proxy_port" "$metrics_port")
ssh_port=$(free_port "$pg_port" "$proxy_port" "$metrics_port" "$my_port")
ssh_host=127.0.0.5
ssh_dir="$work/ssh"
sluiced_pid=""
my_pid=""
sshd_pid=""
sshd_ns=""
issuer_pid=""
kube_pid=""
dockerd_pid=""
added_addrs=()
# Paths on the host that dockerd or containerd create whatever they are
# told (containerd's shim sockets go to /run/containerd/s): those that do
# not exist before the demo are removed at its end, directories only when
# empty (another daemon may use them by then).
host_paths=(/etc/docker /etc/docker/key.json /run/docker /run/docker/plugins
  /run/containerd /run/containerd/s /run/containerd/fifo /run/containerd/runc)
created_paths=()
for p in "${host_paths[@]}"; do [ -e "$p" ] || [ -L "$p" ] || created_paths+=("$p"); done
# sshd's privilege separation directory, compiled into Debian's sshd: it
# refuses to start without it. Made if missing, and removed at the end
# only when no other sshd has started using it meanwhile.
privsep=/run/sshd
privsep_made=""

# dk ARGS...: the docker client, talking to the demo's dockerd only.
dk() { DOCKER_HOST="unix://$dk_sock" DOCKER_CONFIG="$dk/cli" "$docker_cli" "$@"; }
# cgroup_mounts: the mount point of every cgroup hierarchy (cgroup2 and, on
# a hybrid host, each v1 controller's).
cgroup_mounts() { awk '{ for (i = 7; i < NF; i++) if ($i == "-") break; if ($(i+1) == "cgroup" || $(i+1) == "cgroup2") print $5 }' /proc/self/mountinfo; }

stop_docker() {
  [ -n "$dockerd_pid" ] || return 0
  if kill -0 "$dockerd_pid" 2>/dev/null; then
    local ids
    ids=$(dk ps -aq 2>/dev/null)
    [ -n "$ids" ] && dk rm -f -v $ids >/dev/null 2>&1
    dk network rm "$net" >/dev/null 2>&1
    kill -TERM "$dockerd_pid" 2>/dev/null
    for _ in $(seq 300); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$dockerd_pid" 2>/dev/null
  fi
  wait "$dockerd_pid" 2>/dev/null
  dockerd_pid=""
  # Nothing the demo's dockerd started may outlive it: a process whose
  # command line names its directory is its containerd or a shim.
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -qF "$dk/" && kill -KILL "${p#/proc/}" 2>/dev/null
  done
  # Mounts below the work directory (network namespaces under its exec
  # root, overlays under its data root), deepest first.
  awk -v d="$work/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m"; done
}

# stop_sshd: every process in the demo's sshd's mount namespace, which
# only it and what it started are in (the listener, each connection's sshd
# and the sessions below them; sshd gives each connection a session of
# its own, out of reach of a process-group kill): SIGTERM, then SIGKILL to
# what is left after 5 s. The namespace, with its overlay over /etc and
# its other mounts, goes with the last of them.
stop_sshd() {
  [ -n "$sshd_pid" ] || return 0
  local ns=$sshd_ns p i pids
  # A demo that stopped while sshd was starting never read the namespace:
  # it is the pid's (setpriv, then unshare, then sh, then sshd), once
  # unshare has made it.
  [ -n "$ns" ] || ns=$(readlink "/proc/$sshd_pid/ns/mnt" 2>/dev/null)
  if [ -z "$ns" ] || [ "$ns" = "$(readlink /proc/$$/ns/mnt)" ]; then
    kill -KILL "$sshd_pid" 2>/dev/null
  else
    for i in $(seq 100); do
      pids=()
      for p in /proc/[0-9]*; do
        [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$ns" ] && pids+=("${p#/proc/}")
      done
      [ ${#pids[@]} = 0 ] && break
      case $i in
        1) kill -TERM "${pids[@]}" 2>/dev/null ;;
        51) kill -KILL "${pids[@]}" 2>/dev/null ;;
        100) echo "demo: sshd's processes ${pids[*]} survived SIGKILL" >&2 ;;
      esac
      sleep 0.1
    done
  fi
  wait "$sshd_pid" 2>/dev/null
  sshd_pid=""
}

cleanup() {
  set +e
  [ -n "$sluiced_pid" ] && kill "$sluiced_pid" 2>/dev/null && wait "$sluiced_pid" 2>/dev/null
  stop_docker
  stop_sshd
  if [ -n "$privsep_made" ]; then
    local other="" p
    for p in /proc/[0-9]*; do [ "$(readlink "$p/exe" 2>/dev/null)" = "$sshd_bin" ] && other=1 && break; done
    [ -n "$other" ] || rmdir "$privsep" 2>/dev/null
  fi
  [ -n "$issuer_pid" ] && kill "$issuer_pid" 2>/dev/null && wait "$issuer_pid" 2>/dev/null
  # demokube stops its kube-apiserver and etcd (each given 10 s after
  # SIGTERM) and its fake kubelet's commands, then removes its files; its
  # programs die with it if it is killed (Pdeathsig).
  [ -n "$kube_pid" ] && kill "$kube_pid" 2>/dev/null && wait "$kube_pid" 2>/dev/null
  [ -n "$my_pid" ] && kill "$my_pid" 2>/dev/null && wait "$my_pid" 2>/dev/null
  "$BIN/sluice" uninstall --name "$name" >/dev/null
  [ -f "$work/pg/postmaster.pid" ] && su postgres -s /bin/sh -c "$pgbin/pg_ctl -D $work/pg -m immediate stop" >/dev/null 2>&1
  # The scope and every cgroup below it, children first, in every
  # hierarchy: runc makes the containers' cgroup parent in each v1 one on a
  # hybrid host, with the containers' cgroups left in it.
  local m
  for m in $(cgroup_mounts); do
    [ -d "$m/$scope" ] && find "$m/$scope" -depth -type d -exec rmdir {} \;
  done
  # The lo addresses: the demo's own, and the container address sluiced
  # put there (sluice uninstall takes that one off too; this is for a demo
  # that ended before it ran).
  local a
  for a in "${added_addrs[@]}"; do ip addr del "$a/32" dev lo 2>/dev/null; done
  local i
  for ((i = ${#created_paths[@]} - 1; i >= 0; i--)); do
    case ${created_paths[i]} in
      */key.json) rm -f "${created_paths[i]}" ;;
      /run/containerd/runc) [ -d "${created_paths[i]}" ] && find "${created_paths[i]}" -depth -type d -empty -delete ;;
      *) rmdir "${created_paths[i]}" 2>/dev/null ;;
    esac
  done
  rm -rf "$work"
}
trap cleanup EXIT

step "Setup: a private PostgreSQL on 127.0.0.2:$pg_port (and 127.0.0.3, where role app needs a SCRAM password, and $ctr_db, an address on lo for containers)"
# Containers reach this host at an address of its own that is not on
# their loopback: $ctr_db, put on lo here. Checked to be delivered
# locally before anything is sent to it (until then it routes off the
# machine).
ip addr add "$ctr_db/32" dev lo
added_addrs+=("$ctr_db")
route_is_local() { ip route get "$1" | grep '^local ' >/dev/null; }
wait_for "$ctr_db to route locally (ip route get $ctr_db)" route_is_local "$ctr_db"
chown postgres "$work"
su postgres -s /bin/sh -c "$pgbin/initdb -D $work/pg -U postgres -A trust --no-sync >/dev/null"
printf 'local all all trust\nhost all app 0.0.0.0/0 scram-sha-256\nhost all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n' > "$work/pg/pg_hba.conf"
su postgres -s /bin/sh -c "$pgbin/pg_ctl -D $work/pg -l $work/pg.log -w -o '-p $pg_port -k $work -c listen_addresses=127.0.0.2,127.0.0.3,$ctr_db' start >/dev/null"
psql -X -h "$work" -p "$pg_port" -U postgres -qc "create table users(id int, email text); insert into users values (1, 'ada@example.com'), (2, 'alan@example.com');"
# The app role's password exists only in a root-only file on this host.
mkdir -m 700 "$work/secrets"
app_secret="demo-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
(umask 077; printf '%s\n' "$app_secret" > "$work/secrets/app")
psql -X -h "$work" -p "$pg_port" -U postgres -qc "create role app login password '$app_secret'; grant select on users to app;"
echo "running; table users and role app created"

step "Setup: a private MariaDB on 127.0.0.4:$my_port"
mkdir -p "$work/my/tmp"
mariadb-install-db --no-defaults --datadir="$work/my/data" --user=root --tmpdir="$work/my/tmp" --auth-root-authentication-method=socket --skip-test-db >/dev/null 2>&1
mariadbd --no-defaults --datadir="$work/my/data" --user=root --tmpdir="$work/my/tmp" --socket="$work/my/sock" \
  --pid-file="$work/my/pid" --port="$my_port" --bind-address=127.0.0.4 --skip-name-resolve --log-error="$work/my/error.log" \
  --innodb-buffer-pool-size=64M --innodb-flush-log-at-trx-commit=0 > "$work/my/out" 2>&1 &
my_pid=$!
wait_for "MariaDB to accept connections" mariadb --no-defaults -S "$work/my/sock" -u root -e "select 1"
mariadb --no-defaults -S "$work/my/sock" -u root -e "
  create database shop;
  create table shop.customers (id int primary key, name varchar(64), email varchar(128));
  insert into shop.customers values (1, 'Ada Lovelace', 'ada@example.com'), (2, 'Alan Turing', 'alan@example.com');
  create user 'ci'@'%' identified by 'ci-password';
  grant all on shop.* to 'ci'@'%';"
echo "running; table shop.customers and user ci created"

step "Setup: a private OpenSSH sshd on $ssh_host:$ssh_port, the deploy host: it trusts the demo's SSH user CA, and its user deploy and /etc/app.conf exist only for it"
mkdir -p "$ssh_dir/etc-upper" "$ssh_dir/etc-work" "$ssh_dir/home/deploy" "$ssh_dir/var-log" "$work/job"
# The user CA: its private key is the credential Sluice signs each
# session's certificate with, root's alone like the app password (sluiced
# refuses a secret others may read); sshd trusts its public key.
ssh-keygen -q -t ed25519 -N "" -C "sluice demo user CA" -f "$work/secrets/user-ca"
cp "$work/secrets/user-ca.pub" "$ssh_dir/trusted_user_ca_keys"
ssh-keygen -q -t ed25519 -N "" -C "sshd@$ssh_host" -f "$ssh_dir/ssh_host_ed25519_key"
# The host key Sluice checks when it logs in, as ssh would have pinned it.
printf '[%s]:%s %s\n' "$ssh_host" "$ssh_port" "$(cut -d' ' -f1,2 "$ssh_dir/ssh_host_ed25519_key.pub")" > "$work/sluice_known_hosts"
# sshd sees an overlay over /etc, in a mount namespace of its own, whose
# upper layer holds the deploy host's app.conf, and passwd and shadow with
# a user deploy added: an alias of root (uid 0, hence PermitRootLogin yes
# below), its shadow field "*" matching no password without locking the
# account. This machine's /etc is never written.
{ grep -v '^deploy:' /etc/passwd; echo "deploy:x:0:0:deploy:$ssh_dir/home/deploy:/bin/sh"; } > "$ssh_dir/etc-upper/passwd"
(umask 077; { grep -v '^deploy:' /etc/shadow; echo 'deploy:*:::::::'; } > "$ssh_dir/etc-upper/shadow")
chown --reference=/etc/shadow "$ssh_dir/etc-upper/shadow"
chmod --reference=/etc/shadow "$ssh_dir/etc-upper/shadow"
printf '# the deploy host'"'"'s application config\nlisten = 8080\nlog_level = info\n' > "$ssh_dir/etc-upper/app.conf"
# The login records sshd writes for a terminal session (wtmp, btmp,
# lastlog under /var/log, and /run/utmp where the machine has one) go to
# stand-ins in the same namespace.
touch "$ssh_dir/var-log/wtmp" "$ssh_dir/var-log/btmp" "$ssh_dir/var-log/lastlog" "$ssh_dir/utmp"
cat > "$ssh_dir/sshd_config" <<CONF
# The demo's deploy host (no /etc/ssh file is read). Logins only with a
# certificate from the demo's user CA; forwarding stays allowed here, so
# that the refusals below are Sluice's.
ListenAddress $ssh_host:$ssh_port
HostKey $ssh_dir/ssh_host_ed25519_key
PidFile none
LogLevel VERBOSE
TrustedUserCAKeys $ssh_dir/trusted_user_ca_keys
AuthorizedKeysFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin yes
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
Subsystem sftp internal-sftp
CONF
chmod 600 "$ssh_dir/sshd_config"
[ -d "$privsep" ] || { mkdir -m 755 "$privsep"; privsep_made=1; }
# Killed with this script if it dies without its cleanup (each
# connection's sshd then ends with its client); sshd -e logs to the file.
# shellcheck disable=SC2016 # $1 and $2 are the inner sh's arguments
setpriv --pdeathsig KILL unshare --mount --propagation private -- sh -c '
  mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1/etc-upper,workdir=$1/etc-work" /etc || exit 1
  if [ -d /var/log ]; then mount --bind "$1/var-log" /var/log || exit 1; fi
  if [ -f /run/utmp ]; then mount --bind "$1/utmp" /run/utmp || exit 1; fi
  exec "$2" -D -e -f "$1/sshd_config"' sh "$ssh_dir" "$sshd_bin" > "$ssh_dir/sshd.log" 2>&1 &
sshd_pid=$!
for i in $(seq 200); do
  grep -q "Server listening on" "$ssh_dir/sshd.log" && break
  if ! kill -0 "$sshd_pid" 2>/dev/null || [ "$i" = 200 ]; then
    echo "demo: the private sshd did not listen within 10 s; its log:" >&2; cat "$ssh_dir/sshd.log" >&2; exit 1
  fi
  sleep 0.05
done
sshd_ns=$(readlink "/proc/$sshd_pid/ns/mnt")
[ "$sshd_ns" != "$(readlink /proc/$$/ns/mnt)" ] || { echo "demo: sshd is not in a mount namespace of its own" >&2; exit 1; }
# host_etc: what this machine's own /etc, outside sshd's namespace, has
# of the deploy host's user and file.
host_etc() {
  local u=no f=no
  grep -q '^deploy:' /etc/passwd && u=a
  [ -e /etc/app.conf ] && f=an
  echo "this machine's own /etc has $u user deploy and $f app.conf"
}
echo "running (pid $sshd_pid) in mount namespace $sshd_ns; $(host_etc)"

step "Setup: a private Kubernetes API server (kube-apiserver v1.37.2 and etcd on 127.0.0.1, e2e/demokube), its one node a fake kubelet that runs exec'd commands on this machine; a pod web and a secret app in namespace app, and a service account ci/deployer whose token only root holds"
${GO:-go} build -o "$work/demokube" ./e2e/demokube
SLUICE_KUBE_BIN="$kube_bin" "$work/demokube" -dir "$work/kube" > "$work/kube.env" 2> "$work/kube.log" &
kube_pid=$!
# kube-apiserver takes a few seconds to answer /readyz (longer on a busy
# machine): up to 2 minutes.
for i in $(seq 1200); do
  [ -s "$work/kube.env" ] && break
  if ! kill -0 "$kube_pid" 2>/dev/null || [ "$i" = 1200 ]; then
    echo "demo: the private API server did not start within 2 minutes; demokube's log:" >&2; cat "$work/kube.log" >&2; exit 1
  fi
  sleep 0.1
done
# KUBE_URL, KUBE_CA, KUBE_ADMIN, KUBE_TOKEN (the service account's token
# file, 0600), KUBE_DIRECT and KUBECTL.
eval "$(head -1 "$work/kube.env")"
kube_port=${KUBE_URL##*:}
kadmin() { "$KUBECTL" --kubeconfig "$KUBE_ADMIN" "$@"; }
echo "$(kadmin version -o json | awk -F'"' '/"gitVersion"/ { v = $4 } END { print "kube-apiserver " v }') at $KUBE_URL; as the cluster's admin:"
kadmin get pods,secrets -n app

step "Setup: a private dockerd (its own data root and socket in $dk; no iptables rules, IP forwarding or NAT) putting containers in cgroup $ctr_cgroup, and a psql image built from this machine's files"
mkdir -p "$dk/cli" "$mount/$ctr_cgroup"
# Docker's cgroup parent goes in its daemon.json, as sluice install puts
# it in /etc/docker/daemon.json; a network created without a subnet gets
# one out of 198.19.252.0/24, never Docker's 172.17.0.0/16 or
# 192.168.0.0/16. dockerd before 23.0 writes its identity key to
# /etc/docker/key.json unless told otherwise.
key=""
dockerd_major=$("$dockerd_bin" --version | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')
[ "${dockerd_major:-0}" -lt 23 ] && key=", \"deprecated-key-path\": \"$dk/key.json\""
printf '{"cgroup-parent": "/%s", "default-address-pools": [{"base": "198.19.252.0/24", "size": 28}]%s}\n' "$ctr_cgroup" "$key" > "$dk/daemon.json"
# Killed with this script if it dies without its cleanup (containerd,
# which dockerd starts, dies with dockerd).
setpriv --pdeathsig KILL "$dockerd_bin" --config-file "$dk/daemon.json" \
  --data-root "$dk/root" --exec-root "$dk/exec" --pidfile "$dk/docker.pid" -H "unix://$dk_sock" \
  --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --userland-proxy=false \
  --storage-driver=overlay2 --exec-opt native.cgroupdriver=cgroupfs > "$dk/dockerd.log" 2>&1 &
dockerd_pid=$!
for i in $(seq 600); do
  [ -S "$dk_sock" ] && dk version --format '{{.Server.Version}}' 2>/dev/null | grep -q . && break
  if ! kill -0 "$dockerd_pid" 2>/dev/null || [ "$i" = 600 ]; then
    echo "demo: the private dockerd did not answer within 60 s; its log:" >&2; cat "$dk/dockerd.log" >&2; exit 1
  fi
  sleep 0.1
done
echo "dockerd $(dk version --format '{{.Server.Version}}') running on $dk_sock"
# A bridge network of its own with a /24 out of 198.19.248.0/22 that no
# address or route of this host overlaps, without masquerading.
subnet=""
for i in $(shuf -e 248 249 250 251); do
  ip -o -4 addr show | grep " 198\.19\.$i\." >/dev/null && continue
  ip -4 route show | grep "^198\.19\.$i\." >/dev/null && continue
  subnet="198.19.$i.0/24" gateway="198.19.$i.1"
  break
done
[ -n "$subnet" ] || { echo "demo: no free /24 in 198.19.248.0/22 for the containers' network" >&2; exit 1; }
dk network create --driver bridge --subnet "$subnet" --gateway "$gateway" \
  --opt "com.docker.network.bridge.name=sl-demo-$$" --opt com.docker.network.bridge.enable_ip_masquerade=false "$net" >/dev/null
echo "network $net: $subnet, bridge sl-demo-$$ (gateway $gateway, this host)"
# The image: busybox (static) for the userland and the real psql with the
# libraries it loads, from this machine; no registry.
root="$dk/rootfs"
mkdir -p "$root"/{bin,usr/bin,etc,root,proc,sys,dev,run,var,tmp}
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
cp "$pgbin/psql" "$root/usr/bin/psql"
if ldd "$pgbin/psql" | grep -q 'not found'; then echo "demo: $pgbin/psql: a library is missing:" >&2; ldd "$pgbin/psql" >&2; exit 1; fi
# Each library at the path ldd names, and the loader.
for lib in $(ldd "$pgbin/psql" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
tar -C "$root" --numeric-owner -cf - . | dk import --change 'ENV PATH=/bin:/usr/bin' --change 'CMD ["/bin/sh"]' - "$image" >/dev/null
echo "image $image: busybox and $pgbin/psql with its libraries ($(du -sm "$root" | cut -f1) MB), built with docker import"

step "Setup: sluiced with scope $scope, for jobs of cgroup $cgroup and, for containers, $ctr_cgroup, intercepting 127.0.0.2:$pg_port, 127.0.0.3:$pg_port, $ctr_db:$pg_port, $ssh_host:$ssh_port and 127.0.0.1:$kube_port"
# A local OIDC issuer stands in for GitHub's (outside this machine): its
# tokens say repository acme/api, ref refs/heads/main.
${GO:-go} build -o "$work/demoissuer" ./e2e/demoissuer
"$work/demoissuer" -dir "$work" -claims '{"sub":"repo:acme/api:ref:refs/heads/main","repository":"acme/api","ref":"refs/heads/main","run_id":"1001","actor":"octocat"}' > "$work/issuer.env" 2>&1 &
issuer_pid=$!
wait_for "the demo OIDC issuer" test -s "$work/issuer.env"
eval "$(head -1 "$work/issuer.env")"
mkdir -p "$mount/$cgroup" "$mount/$elsewhere" "$work/rules"
cat > "$work/rules/demo.hcl" <<HCL
# The demo's ruleset: one PostgreSQL database that jobs running as root may
# read and write but never drop from; anything else gets the default deny.
target "demo-db" {
  protocol = "postgres"
  # The same server at an address of this host that containers reach.
  address  = ["127.0.0.2:$pg_port", "$ctr_db:$pg_port"]
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

# A MariaDB server: the same rules in MySQL's terms.
target "demo-mariadb" {
  protocol = "mysql"
  address  = ["127.0.0.4:$my_port"]
}

policy "ci-jobs-mariadb" {
  targets = ["demo-mariadb"]
  when    = process.uid == 0

  deny "no-ddl" {
    when   = contains(["drop", "truncate", "alter"], sql.kind)
    reason = "schema changes go through migrations"
  }

  hold "deletes" {
    when      = sql.kind == "delete"
    approvers = ["local-admin"]
    timeout   = "2m"
    reason    = "deleting customer rows needs a human"
  }

  mask "contact-details" {
    columns = ["customers.email"]
    using   = "email"
  }
}

# The same server on 127.0.0.3 holds its credentials itself: jobs of
# acme/api on main authenticate as app without knowing its password. Sluice
# makes those logins, so it keeps up to two of their server connections per
# job for the job's next sessions (reset with DISCARD ALL in between).
target "vault-db" {
  protocol      = "postgres"
  address       = ["127.0.0.3:$pg_port"]
  upstream_pool = 2

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

# The deploy host, over SSH. Sluice logs in to it itself, with a
# certificate it mints for each session from the user CA the host trusts
# (the job's identity in its key id), and checks the host's key against
# known_hosts: jobs hold no key.
target "deploy-host" {
  protocol    = "ssh"
  address     = ["$ssh_host:$ssh_port"]
  known_hosts = "$work/sluice_known_hosts"

  credential "deploy" {
    user     = "deploy"
    ssh_auth = "certificate"
    key_file = "$work/secrets/user-ca"
    policies = ["acme-api-deploy"]
  }
}

# Jobs of acme/api, granted the deploy credential on main. Every request
# of their sessions is decided, by the default ruleset's SSH rules
# (ruleset/default.hcl), and recorded in full: a shell as a terminal.
policy "acme-api-deploy" {
  targets = ["deploy-host"]
  when    = identity.repository == "acme/api"
  record  = "full"
  credential "deploy" {
    when = identity.ref == "refs/heads/main"
  }

  deny "ssh-tunnels" {
    when   = contains(["direct_tcpip", "tcpip_forward", "agent_forward", "x11"], ssh.kind)
    reason = "port forwarding (ssh -L, -R, -D, -W, ProxyJump), agent forwarding and X11 are not allowed from CI"
  }

  deny "ssh-database-dumps" {
    when = ssh.kind == "exec" && (
      contains(ssh.programs, "pg_dump") ||
      contains(ssh.programs, "pg_dumpall") ||
      contains(ssh.programs, "mysqldump") ||
      contains(ssh.programs, "mariadb-dump")
    )
    reason = "database dumps are not allowed over SSH, where no SQL rule sees them; connect to the database through a postgres or mysql target instead"
  }
}

# The Kubernetes API server. Jobs' kubeconfigs (sluice kubeconfig) trust
# Sluice's CA and hold no credential: Sluice checks the server against the
# cluster's CA and presents the service account token only root can read.
target "demo-cluster" {
  protocol    = "k8s"
  address     = ["127.0.0.1:$kube_port"]
  upstream_ca = "$KUBE_CA"

  credential "deployer" {
    user       = "system:serviceaccount:ci:deployer"
    token_file = "$KUBE_TOKEN"
    policies   = ["acme-api-k8s"]
  }
}

# Jobs of acme/api, granted the deployer's token on main. Their requests
# are decided by the default ruleset's Kubernetes rules (ruleset/
# default.hcl's baseline, copied here with the same names and conditions;
# only the exec hold's approvers are the demo's local admin, root, instead
# of group:security) and recorded in full: an exec as its terminal.
policy "acme-api-k8s" {
  targets = ["demo-cluster"]
  when    = identity.repository == "acme/api"
  record  = "full"
  credential "deployer" {
    when = identity.ref == "refs/heads/main"
  }

  hold "k8s-exec" {
    when = target.protocol == "k8s" && k8s.group == "" && k8s.resource == "pods" && (
      contains(["exec", "attach", "portforward"], k8s.subresource)
    )
    approvers = ["local-admin"]
    timeout   = "2m"
    reason    = "exec, attach and port-forward into a pod need a security approver"
  }

  deny "k8s-secrets-all-namespaces" {
    when = target.protocol == "k8s" && (
      k8s.group == "" && k8s.resource == "secrets" && k8s.namespace == "" &&
      contains(["get", "list", "watch"], k8s.verb)
    )
    reason = "reading secrets across all namespaces is not allowed from CI; name the namespace (kubectl -n NAMESPACE)"
  }

  deny "k8s-namespace-deletion" {
    when = target.protocol == "k8s" && (
      k8s.group == "" && k8s.resource == "namespaces" &&
      contains(["delete", "deletecollection"], k8s.verb)
    )
    reason = "deleting namespaces, and everything in them, is not allowed from CI"
  }

  mask "k8s-secrets-and-personal-data" {
    when = target.protocol == "k8s" && k8s.resource_request && k8s.verb != "proxy" && (
      !contains(["exec", "attach", "portforward", "proxy"], k8s.subresource)
    )
    columns = ["secrets.data", "secrets.stringData"]
    detect  = ["secret", "jwt", "aws_access_key", "private_key", "card_number", "iban", "ssn", "email", "phone"]
    using   = "redact"
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

test "MariaDB: DROP is refused" {
  target      = "demo-mariadb"
  process     = { uid = 0 }
  query       = "DROP TABLE customers"
  expect      = "deny"
  expect_rule = "ci-jobs-mariadb/deny/no-ddl"
}

test "SSH: main of acme/api runs a command on the deploy host as deploy" {
  target            = "deploy-host"
  identity          = { repository = "acme/api", ref = "refs/heads/main" }
  query             = "cat /etc/app.conf"
  expect            = "allow"
  expect_credential = "deploy"
}

test "SSH: a database dump over ssh is refused" {
  target      = "deploy-host"
  identity    = { repository = "acme/api", ref = "refs/heads/main" }
  query       = "pg_dump -U postgres prod"
  expect      = "deny"
  expect_rule = "acme-api-deploy/deny/ssh-database-dumps"
}

test "SSH: a tunnel to the database is refused" {
  target      = "deploy-host"
  identity    = { repository = "acme/api", ref = "refs/heads/main" }
  ssh         = { kind = "direct_tcpip", forward_host = "127.0.0.2", forward_port = $pg_port }
  expect      = "deny"
  expect_rule = "acme-api-deploy/deny/ssh-tunnels"
}

test "Kubernetes: kubectl get secrets -A is refused" {
  target      = "demo-cluster"
  identity    = { repository = "acme/api", ref = "refs/heads/main" }
  query       = "GET /api/v1/secrets"
  expect      = "deny"
  expect_rule = "acme-api-k8s/deny/k8s-secrets-all-namespaces"
}

test "Kubernetes: kubectl exec waits for a human" {
  target      = "demo-cluster"
  identity    = { repository = "acme/api", ref = "refs/heads/main" }
  k8s         = { verb = "create", resource = "pods", subresource = "exec", namespace = "app", name = "web" }
  expect      = "hold"
  expect_rule = "acme-api-k8s/hold/k8s-exec"
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
# The connect programs sit on the scope and act for job tasks (marked in
# the kernel), wherever below it they move.
scope      = "$scope"
proxy_port = $proxy_port
data_dir   = "$work/data"
api_socket = "$work/sluiced.sock"
rules_dir  = "$work/rules"
metrics_addr = "127.0.0.1:$metrics_port"
# Containers of the demo's dockerd: sluiced hooks their cgroup parent, puts
# $ctr_proxy on lo for their redirected connects (no IPv6 address), and
# asks the daemon which container a process is in.
containers {
  cgroup        = "$ctr_cgroup"
  docker_socket = "$dk_sock"
  address_ipv4  = "$ctr_proxy"
  address_ipv6  = "none"
}
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
added_addrs+=("$ctr_proxy") # sluiced puts it on lo; the demo removes it
"$BIN/sluiced" --config "$work/sluiced.hcl" > "$work/sluiced.log" 2>&1 &
sluiced_pid=$!
for _ in $(seq 200); do
  "$BIN/sluice" status --socket "$work/sluiced.sock" >/dev/null 2>&1 && break
  kill -0 "$sluiced_pid" 2>/dev/null || { cat "$work/sluiced.log"; exit 1; }
  sleep 0.05
done
run "$BIN/sluice" status --socket "$work/sluiced.sock"

step "1. psql inside the hooked cgroup, pointed at the database's real address, reaches it through Sluice; the flow log says who went where"
run_job psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -c "select inet_server_addr() as server, inet_server_port() as port, count(*) as users from users"
echo "-- sluiced's flow line for it (JSON, one per flow, at its end):"
log_line flow '"comm":"psql"'

step "2. The same psql outside the cgroup is not intercepted"
flows_before=$(grep -c '"@message":"flow"' "$work/sluiced.log")
run psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -Atc "select 'direct, not through sluice'"
echo "flow lines in sluiced's log before: $flows_before, after: $(grep -c '"@message":"flow"' "$work/sluiced.log")"

step "3. Blocked statements fail with a normal PostgreSQL error (SQLSTATE 42501) naming the rule; the server never sees them and the session goes on"
run_job psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -v VERBOSITY=verbose -c "DROP TABLE users" || true
echo "-- a data-modifying CTE that deletes, outside a transaction block and inside one; the session goes on after each:"
printf '$ psql <<SQL\n'
in_job psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -v VERBOSITY=verbose -e <<'SQL' || true
WITH gone AS (DELETE FROM users RETURNING *) SELECT count(*) FROM gone;
SELECT count(*) AS users_still_there FROM users;
BEGIN;
WITH gone AS (DELETE FROM users RETURNING *) SELECT count(*) FROM gone;
ROLLBACK;
SELECT count(*) AS users_still_there FROM users;
SQL
log_line "statement denied" '"rule":"ci-jobs/deny/no-bulk-delete"'
echo "-- a DROP smuggled inside a DO block, whose body Sluice reads too:"
run_job psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -v VERBOSITY=verbose -c "DO \$\$ BEGIN EXECUTE 'DROP TABLE users'; END \$\$" || true
run psql -X -h "$work" -p "$pg_port" -U postgres -Atc "SELECT 'users still there (checked directly): ' || count(*) FROM users"

step "4. A masked column: users.email reaches the job with its local part replaced, under an alias, inside an expression and from a pipelining driver"
run_job psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -c "SELECT id, email, email AS alias, upper(email) AS expression FROM users ORDER BY id"
echo "(a value masks to the same token every time, so email and alias agree and joins on masked test data still line up;"
echo " upper(email) is a different value, caught by the email detector, so its token differs)"
run psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -c "SELECT id, email FROM users ORDER BY id"
echo "(that query ran outside the cgroup: the real values)"
${GO:-go} build -o "$work/pgxclient" ./e2e/pgxclient
echo "-- a Go program (pgx) pipelines a transaction's first SELECT behind its BEGIN, as a batch and byte for byte as JDBC does; both come back masked:"
run_job "$work/pgxclient" "postgres://postgres@127.0.0.2:$pg_port/postgres?sslmode=disable" pipelined

step "5. A held statement: a COPY export waits for a human; the job's log says how to approve it, and it runs (masked) once approved"
PGSSLMODE=disable in_job setpriv --reuid=65534 --regid=65534 --clear-groups psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -c "COPY users TO STDOUT" > "$work/held.out" 2>&1 &
held=$!
# held_id: the ID of a pending hold (approvals list also shows recent
# decisions, in no fixed order).
held_id() { "$BIN/sluice" approvals list --socket "$work/sluiced.sock" --json | awk -F'"' '/"ID":/ { id = $4 } /"State": "pending"/ { print id; exit }'; }
has_hold() { [ -n "$(held_id)" ]; }
wait_for "the held COPY to show in sluice approvals list" has_hold
id=$(held_id)
run "$BIN/sluice" approvals list --socket "$work/sluiced.sock"
echo "-- the job so far (it is waiting):"
cat "$work/held.out"
run "$BIN/sluice" approve "$id" --socket "$work/sluiced.sock" --comment "one-off export for the migration test"
wait "$held" || true
echo "-- the job after approval:"
cat "$work/held.out"

step "6. Recorded: every session is in a signed, hash-chained recording that responders search, read and verify"
run "$BIN/sluice" sessions list --socket "$work/sluiced.sock"
# The transcript of step 3's session: two denials inside one session.
cte=$("$BIN/sluice" sessions list --socket "$work/sluiced.sock" --verdict deny --json | awk -F'"' '/"id":/ { id = $4 } /"denied": 2/ { print id; exit }')
run "$BIN/sluice" sessions show --socket "$work/sluiced.sock" "$cte"
run "$BIN/sluice" verify --socket "$work/sluiced.sock" --all

step "7. Credential injection: a CI job connects as app with a wrong password; Sluice authenticates with the secret only root can read"
# A GitHub job: its process tree hangs below a Runner.Worker and can ask
# the issuer for a token, as GitHub's runner lets a job do.
cp /bin/sh "$work/Runner.Worker"
job() {
  ACTIONS_ID_TOKEN_REQUEST_URL="$TOKEN_URL" ACTIONS_ID_TOKEN_REQUEST_TOKEN="$REQUEST_TOKEN" PGPASSWORD=not-the-password \
    in_job "$work/Runner.Worker" -c "$1"
}
printf '$ PGPASSWORD=not-the-password psql -h 127.0.0.3 -U whoever -c "select current_user, count(*) from users"   (as a job of acme/api on main)\n'
job "psql -X -h 127.0.0.3 -p $pg_port -U whoever -d postgres -c 'select current_user, count(*) from users'"
log_line "authenticated with an injected credential"
echo "-- the same psql outside a CI job (no verified identity):"
run_job psql -X -h 127.0.0.3 -p "$pg_port" -U app -d postgres -Atc "select 1" || echo "(refused: without a verified CI identity no policy covers this connection)"
echo "-- the same job's next two sessions reuse that server connection, reset in between (upstream_pool):"
printf '$ psql ... -c "set work_mem = '"'"'64MB'"'"'" -c "select pg_backend_pid(), current_setting('"'"'work_mem'"'"')"; psql ... -c "select pg_backend_pid(), current_setting('"'"'work_mem'"'"')"   (one job)\n'
job "psql -X -h 127.0.0.3 -p $pg_port -U whoever -d postgres -c \"set work_mem = '64MB'\" -c \"select pg_backend_pid(), current_setting('work_mem')\"; psql -X -h 127.0.0.3 -p $pg_port -U whoever -d postgres -c \"select pg_backend_pid(), current_setting('work_mem')\""
log_line "server connection pooled"
log_line flow '"upstream_pool":"reused, released"' | grep -o '"upstream_pool":"[^"]*"'
if grep -rqF "$app_secret" "$work/sluiced.log" "$work/data"; then echo "demo: the secret leaked into the log or the recordings" >&2; exit 1; fi
echo "the app password appears in no log line and no recording"

step "8. Rulesets: checked and unit-tested before use; a job no policy covers gets the default deny; a broken edit is refused while the old rules keep enforcing"
run "$BIN/sluice" rules check "$work/rules"
run "$BIN/sluice" rules test "$work/rules"
run "$BIN/sluice" rules explain "$work/rules" --target demo-db --process uid=0 --query "DROP TABLE users"
echo "-- a job running as uid 12345, which no policy covers:"
run_job setpriv --reuid=12345 --regid=12345 --clear-groups psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -Atc "select 1" || echo "(denied, as the ruleset's default says)"
log_line "flow denied"
echo "-- a broken edit lands in the rules directory:"
echo 'policy "oops" { targets = ["no-such-target"] }' > "$work/rules/oops.hcl"
run cat "$work/rules/oops.hcl"
wait_for "the daemon to reject the broken edit" sh -c "'$BIN/sluice' status --json --socket '$work/sluiced.sock' | grep -q oops.hcl"
printf '$ sluice status | grep -A2 ^ruleset\n'
"$BIN/sluice" status --socket "$work/sluiced.sock" | grep -A2 '^ruleset'
echo "-- with the broken file still there, the old rules still refuse a DROP:"
run_job psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -v VERBOSITY=verbose -c "DROP TABLE users" || true
rm "$work/rules/oops.hcl"

step "9. sluice doctor checks the installation, and Prometheus metrics count flows, verdicts by rule and statement latency"
run "$BIN/sluice" doctor --config "$work/sluiced.hcl" --docker-config "$dk/daemon.json" || true
printf '$ curl -s http://127.0.0.1:%s/metrics | grep ...\n' "$metrics_port"
curl -fsS "http://127.0.0.1:$metrics_port/metrics" | grep -E '^sluice_(flows_total|verdicts_total|holds_pending|statement_latency_seconds_count)' | head -14
run "$BIN/sluice" status --socket "$work/sluiced.sock"

step "10. MariaDB: the unchanged mariadb client at the server's real address gets the same guard in MySQL's terms: ERROR 1227 (42000) for a DROP, masked emails, a DELETE held for a human, all recorded"
my_job() { run_job mariadb --no-defaults -h 127.0.0.4 -P "$my_port" -u ci -pci-password shop "$@"; }
my_job -e "DROP TABLE customers" || true
my_job -e "SELECT id, name, email FROM customers ORDER BY id"
in_job mariadb --no-defaults -h 127.0.0.4 -P "$my_port" -u ci -pci-password shop -e "DELETE FROM customers WHERE id = 2" > "$work/my-held.out" 2>&1 &
held=$!
wait_for "the held DELETE to show in sluice approvals list" has_hold
id=$(held_id)
run "$BIN/sluice" approvals list --socket "$work/sluiced.sock"
run "$BIN/sluice" deny "$id" --socket "$work/sluiced.sock" --comment "not from CI"
wait "$held" || true
echo "-- the job after the refusal:"
cat "$work/my-held.out"
my_job -e "SELECT COUNT(*) AS customers FROM customers"
my=$("$BIN/sluice" sessions list --socket "$work/sluiced.sock" --json | awk -F'"' '/"id":/ { id = $4 } /"target": "demo-mariadb"/ { last = id } END { print last }')
run "$BIN/sluice" sessions show --socket "$work/sluiced.sock" "$my"

step "11. Container jobs: a docker run of psql from the job reaches the database at its real address $ctr_db through Sluice: the DROP is refused, emails come back masked, and the flow log names the container"
echo "-- the job's docker client talks to the demo's dockerd (DOCKER_HOST=unix://$dk_sock), which starts the container in $ctr_cgroup, outside the job's cgroup, on network $net:"
# ctr_job NAME ARGS...: docker run --rm --name NAME of the image with ARGS,
# as the job. The client's warning that IPv4 forwarding is disabled, which
# it prints for every container on a bridge, is left out (and said so).
forwarding_warned=""
ctr_job() {
  local ctr=$1 out rc=0; shift
  printf '$ sluice run --cgroup %s -- docker run --rm --name %s --network %s %s %s\n' "$cgroup" "$ctr" "$net" "$image" "$*"
  out=$(in_job env DOCKER_HOST="unix://$dk_sock" DOCKER_CONFIG="$dk/cli" "$docker_cli" run --rm --name "$ctr" --network "$net" "$image" "$@" 2>&1) || rc=$?
  case $out in *"WARNING: IPv4 forwarding is disabled"*) forwarding_warned=1 ;; esac
  printf '%s\n' "$out" | grep -v '^WARNING: IPv4 forwarding is disabled' || true
  return "$rc"
}
ctr_job ci-job-drop psql -X -h "$ctr_db" -p "$pg_port" -U postgres -d postgres -v VERBOSITY=verbose -c "DROP TABLE users" || true
ctr_job ci-job-select psql -X -h "$ctr_db" -p "$pg_port" -U postgres -d postgres -c "SELECT id, email FROM users ORDER BY id"
[ -z "$forwarding_warned" ] || echo "(docker run's warning that IPv4 forwarding is disabled is left out above: the demo's dockerd runs without forwarding on purpose, and a container reaches this host's addresses without it)"
echo "-- sluiced's flow line for the DROP's container: its id, name and image, its own network namespace, the denial:"
log_line flow '"container_name":"/\?ci-job-drop"'
run psql -X -h "$work" -p "$pg_port" -U postgres -Atc "SELECT 'users still there (checked directly): ' || count(*) FROM users"

step "12. A root job that moves itself out of its cgroup is still intercepted (its DROP is refused), and the move is a tamper alert: log line, recording, metric"
# The job's shell moves itself into $elsewhere, a cgroup of no job's
# below the scope; its psql is still a job's, by the kernel's mark.
flee='echo $$ > '"$mount/$elsewhere"'/cgroup.procs; grep ^0:: /proc/self/cgroup; psql -X -h 127.0.0.2 -p '"$pg_port"' -U postgres -v VERBOSITY=verbose -c "DROP TABLE users"'
printf "\$ sluice run --cgroup %s -- sh -c '%s'\n" "$cgroup" "$flee"
in_job sh -c "$flee" || true
echo "-- sluiced's alert (the kernel writes each move to a ring buffer pinned in bpffs: one made while sluiced is down is reported by the next sluiced):"
log_line "tamper: a job process was moved out of its job cgroup" "\"to_cgroup\":\"[^\"]*$elsewhere\""
echo "-- its recording, sealed like a session's:"
run "$BIN/sluice" sessions list --socket "$work/sluiced.sock" --target cgroup_move
moved=$("$BIN/sluice" sessions list --socket "$work/sluiced.sock" --target cgroup_move --json | awk -F'"' '/"id":/ { print $4; exit }')
run "$BIN/sluice" sessions show --socket "$work/sluiced.sock" "$moved"
printf '$ curl -s http://127.0.0.1:%s/metrics | grep %s\n' "$metrics_port" "'^sluice_tamper_events_total{kind=\"cgroup_move\"}'"
curl -fsS "http://127.0.0.1:$metrics_port/metrics" | grep '^sluice_tamper_events_total{kind="cgroup_move"}'

step "13. SSH: a job's ssh to the deploy host's real address goes through Sluice, which logs in with a certificate minted for the job: a command runs and is recorded, a pg_dump and an ssh -L tunnel are refused by rules, and a shell on a terminal is recorded and exported for asciinema"
echo "-- a runner's ssh clients trust Sluice's SSH host CA through this line, which sluice install writes into /etc/ssh/ssh_known_hosts; the demo's job reads it from a file of its own instead:"
printf '$ sluice ssh-ca --config %s > %s\n' "$work/sluiced.hcl" "$work/job/ssh_known_hosts"
"$BIN/sluice" ssh-ca --config "$work/sluiced.hcl" > "$work/job/ssh_known_hosts"
cat "$work/job/ssh_known_hosts"
ssh_opts="-F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=$work/job/ssh_known_hosts -o UserKnownHostsFile=/dev/null -p $ssh_port"
echo "-- the job's ssh options, in its SSH_OPTS: no ssh config and no key of its own; the host is checked strictly, against that line alone:"
echo "SSH_OPTS=\"$ssh_opts\""
# ssh_job SCRIPT: SCRIPT, shown line by line, run by sh as a GitHub job of
# acme/api on main (step 7's Runner.Worker, with the token request
# variables), in $work/job, which is also its HOME (no keys there).
ssh_job() {
  printf '%s\n' "$1" | sed 's/^/$ /'
  ACTIONS_ID_TOKEN_REQUEST_URL="$TOKEN_URL" ACTIONS_ID_TOKEN_REQUEST_TOKEN="$REQUEST_TOKEN" \
    in_job env -C "$work/job" HOME="$work/job" SSH_OPTS="$ssh_opts" "$work/Runner.Worker" -c "$1"
}
echo "-- as a job of acme/api on main, a command on the deploy host:"
ssh_job "ssh \$SSH_OPTS deploy@$ssh_host 'cat /etc/app.conf'"
echo "-- the deploy host's sshd log: Sluice logged in as deploy with a certificate it minted for this session, its key id naming the job:"
wait_for "sshd to log the certificate login" grep -q "Accepted publickey for deploy " "$ssh_dir/sshd.log"
grep "Accepted publickey for deploy " "$ssh_dir/sshd.log" | tail -1 | tr -d '\r'
echo "-- a database dump over ssh, where no SQL rule would see it: refused by the rule before it runs; the job's ssh exits 1, naming the rule:"
ssh_job "ssh \$SSH_OPTS deploy@$ssh_host 'pg_dump -U postgres prod' > prod.sql
echo \"exit status \$?; prod.sql: \$(wc -c < prod.sql) bytes\""
tunnel_port=$(free_port "$pg_port" "$proxy_port" "$metrics_port" "$my_port" "$ssh_port")
echo "-- a tunnel (ssh -L) to the database Sluice guards: the listener comes up on the runner, the channel through it is refused (-W, -D and ProxyJump open the same kind of channel):"
ssh_job "ssh \$SSH_OPTS -f -N -M -S ctl -E tunnel.log -o ExitOnForwardFailure=yes -L 127.0.0.1:$tunnel_port:127.0.0.2:$pg_port deploy@$ssh_host
psql -X -h 127.0.0.1 -p $tunnel_port -U postgres -Atc 'select count(*) from users'
ssh \$SSH_OPTS -S ctl -O exit deploy@$ssh_host
cat tunnel.log"
echo "-- a shell on a terminal (ssh -tt, its keystrokes from a pipe here):"
ssh_job "printf 'sed -i s/info/debug/ /etc/app.conf\\ncat /etc/app.conf\\nexit\\n' | ssh \$SSH_OPTS -tt deploy@$ssh_host" 2>&1 | tr -d '\r'
echo "-- recorded, each with the job's identity; the shell's session, the newest, at level full:"
run "$BIN/sluice" sessions list --socket "$work/sluiced.sock" --target deploy-host
newest_ssh() { "$BIN/sluice" sessions list --socket "$work/sluiced.sock" --target deploy-host --limit 1 --json; }
newest_ssh_sealed() { newest_ssh | grep -q '"status": "sealed"'; }
wait_for "the shell session's recording to be sealed" newest_ssh_sealed
shell=$(newest_ssh | awk -F'"' '/"id":/ { print $4; exit }')
run "$BIN/sluice" sessions show --socket "$work/sluiced.sock" "$shell"
printf '$ sluice export %s --format asciicast -o shell.cast\n' "$shell"
"$BIN/sluice" export "$shell" --socket "$work/sluiced.sock" --format asciicast -o "$work/job/shell.cast"
printf '$ head -3 shell.cast\n'
head -3 "$work/job/shell.cast"
if command -v asciinema >/dev/null && command -v script >/dev/null; then
  # asciinema opens the terminal; script(1) gives it one.
  printf '$ asciinema cat shell.cast | tail -4   (asciinema %s, on a terminal script(1) makes)\n' "$(asciinema --version | awk '{ print $2 }')"
  (cd "$work/job" && timeout 30 script -qc "asciinema cat shell.cast" /dev/null < /dev/null) | tr -d '\r' | tail -4
  echo # the recording ends at the shell's last prompt, mid-line
else
  echo "(asciicast v2: asciinema play shell.cast plays it; asciinema is not installed here)"
fi
echo "-- the deploy host's changes stayed on it: $(host_etc)"

step "14. Kubernetes: a job's kubectl reaches the API server's real address through Sluice, which presents a service account token the job never holds: get pods works, get secrets -A is refused naming the rule, a secret comes back masked, and kubectl exec waits for a human, then plays back from its recording"
k8s_home="$work/k8s"
mkdir -m 755 "$k8s_home"
echo "-- the job's kubeconfig, which a runner points jobs at with KUBECONFIG: it trusts Sluice's CA and sends Sluice's TLS server name (so Sluice decodes its flows), and holds no credential:"
run "$BIN/sluice" kubeconfig --server "$KUBE_URL" --data-dir "$work/data" --namespace app -o "$k8s_home/kubeconfig"
printf '$ grep -E "server:|tls-server-name:|token:" kubeconfig\n'
grep -E 'server:|tls-server-name:|token:' "$k8s_home/kubeconfig"
chown -R 65534:65534 "$k8s_home"
# k8s_job SCRIPT: SCRIPT, shown line by line, run by sh as a GitHub job of
# acme/api on main (step 7's Runner.Worker, with the token request
# variables), as nobody (root approves its holds: a job may not approve
# its own), in $k8s_home, its HOME, with the job's kubeconfig and kubectl
# v1.37.2 on PATH.
k8s_job() {
  printf '%s\n' "$1" | sed 's/^/$ /'
  ACTIONS_ID_TOKEN_REQUEST_URL="$TOKEN_URL" ACTIONS_ID_TOKEN_REQUEST_TOKEN="$REQUEST_TOKEN" \
    in_job setpriv --reuid=65534 --regid=65534 --clear-groups \
    env -C "$k8s_home" HOME="$k8s_home" KUBECONFIG="$k8s_home/kubeconfig" PATH="$kube_bin:$PATH" "$work/Runner.Worker" -c "$1"
}
echo "-- as a job of acme/api on main: the namespace's pods, and who the API server thinks the job is (the service account whose token Sluice presents):"
k8s_job "kubectl get pods"
k8s_job "kubectl auth whoami"
echo "-- every secret of the cluster at once: refused by the rule before the API server sees it, in kubectl's own words:"
k8s_job 'kubectl get secrets -A; echo "exit status $?"'
echo "-- one secret of the job's namespace: its values come back masked:"
k8s_job "kubectl get secret app -o yaml"
printf '$ kubectl get secret app -n app -o jsonpath={.data.password} | base64 -d   (as the cluster'"'"'s admin, outside the job: the server'"'"'s copy)\n'
kadmin get secret app -n app -o 'jsonpath={.data.password}' | base64 -d
echo
echo "-- a shell in the pod (kubectl exec -it; script(1) gives kubectl a terminal, its keystrokes from a pipe), held until a human approves it:"
k8s_job "printf 'echo the pod says \$((6*7))\\nexit\\n' | script -qec 'kubectl exec -it web -- sh' /dev/null" > "$work/k8s-exec.out" 2>&1 &
held=$!
wait_for "the held kubectl exec to show in sluice approvals list" has_hold
id=$(held_id)
run "$BIN/sluice" approvals list --socket "$work/sluiced.sock"
echo "-- the job so far (it is waiting):"
cat "$work/k8s-exec.out"
run "$BIN/sluice" approve "$id" --socket "$work/sluiced.sock" --comment "looking into the rollout"
wait "$held" || true
echo "-- the job after approval:"
tr -d '\r' < "$work/k8s-exec.out"
echo # the shell's output ends at its last prompt, mid-line
echo "-- recorded at level full: sessions show lists each request with its verdict and the hold's approval, and the exec's terminal plays back from its asciicast export:"
run "$BIN/sluice" sessions list --socket "$work/sluiced.sock" --target demo-cluster
# exec_session: the sealed session of the target whose terminal shows
# the shell's answer.
exec_session() {
  local s
  for s in $("$BIN/sluice" sessions list --socket "$work/sluiced.sock" --target demo-cluster --json | awk -F'"' '/"id":/ { id = $4 } /"status": "sealed"/ { print id }'); do
    "$BIN/sluice" export "$s" --socket "$work/sluiced.sock" --format asciicast 2>/dev/null | grep -q 'the pod says 42' && { echo "$s"; return 0; }
  done
  return 1
}
wait_for "the exec's recording to be sealed" exec_session
shell=$(exec_session)
run "$BIN/sluice" sessions show --socket "$work/sluiced.sock" "$shell"
printf '$ sluice export %s --format asciicast -o exec.cast\n' "$shell"
"$BIN/sluice" export "$shell" --socket "$work/sluiced.sock" --format asciicast -o "$k8s_home/exec.cast"
printf '$ head -3 exec.cast\n'
head -3 "$k8s_home/exec.cast"
if command -v asciinema >/dev/null && command -v script >/dev/null; then
  printf '$ asciinema cat exec.cast   (on a terminal script(1) makes)\n'
  (cd "$k8s_home" && timeout 30 script -qc "asciinema cat exec.cast" /dev/null < /dev/null) | tr -d '\r'
  echo # the recording ends at the shell's last prompt, mid-line
else
  echo "(asciicast v2: asciinema play exec.cast plays it; asciinema is not installed here)"
fi

step "15. Fail closed: with sluiced killed, the cgroup's connects are refused, not sent direct"
kill -9 "$sluiced_pid"; wait "$sluiced_pid" 2>/dev/null || true; sluiced_pid=""
run_job psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -Atc "select 1" || echo "(refused, as it should be)"

step "16. sluice uninstall removes the pinned hooks"
run "$BIN/sluice" uninstall --name "$name"
run_job psql -X -h 127.0.0.2 -p "$pg_port" -U postgres -Atc "select 'after uninstall: direct again'"

step "Not in this demo yet"
echo "Jobs in Kubernetes executors' pods and in containers of runtimes other than Docker."
