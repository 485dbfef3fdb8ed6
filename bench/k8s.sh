# The Kubernetes part of bench/suite.sh (sourced, not run): a private
# Kubernetes API server and timed gets of one pod, through Sluice and
# direct.
#
# The API server is e2e/demokube's (testenv.StartKube's kube-apiserver
# v1.37.2 and etcd on 127.0.0.1, programs from scripts/build-kube.sh's
# cache), with a service account ci/deployer bound to cluster-admin and a
# Running pod app/web. The suite's ruleset gets a k8s target for it whose
# credential is the service account's token file: the job's kubeconfig
# (sluice kubeconfig) trusts Sluice's CA and holds no credential, and
# Sluice presents the token. Credentials go only to flows with a verified
# OIDC identity, so the proxied runs are a GitHub job, as in bench/ssh.sh:
# a copy of sh named Runner.Worker, in the hooked cgroup, that can ask a
# local issuer (e2e/demoissuer; bench/ssh.sh's when an SSH workload runs
# too) for a token of acme/api. Modes:
#   direct     e2e/k8sclient straight to the API server (outside the
#              cgroup) with the same service account's token
#   commands   the same program from the job, through the k8s target:
#              decoded, the token injected, every request decided by the
#              default ruleset (its Kubernetes rules included: the mask
#              rule reads every pod), record = "commands"
# Workload:
#   k8s-get    K8S_GETS (500) sequential gets of pod app/web over one
#              connection (client-go's typed client, which asks for
#              protobuf), after one warm-up get: e2e/k8sclient's bench mode
# The issue's target: at most 2 ms added per request at p50. The table
# says whether this run met it.

K8S_MODES="direct commands"
K8S_GETS=${K8S_GETS:-500}
k8s_dir=""; k8s_port=""; k8s_pid=""; k8s_issuer_pid=""; k8s_version=""

# k8s_wanted: whether ONLY selects the Kubernetes workload.
k8s_wanted() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" k8s-"* ]]; }

# k8s_start: builds e2e/demokube and e2e/k8sclient, starts the API server
# and, unless bench/ssh.sh's ssh_start started one, the OIDC issuer. Sets
# k8s_port, k8s_pid, k8s_issuer_pid and demokube's KUBE_* variables;
# k8s_stop (from the suite's cleanup) stops them.
k8s_start() {
  local kube_bin
  kube_bin=$(bash scripts/build-kube.sh --cached) ||
    { echo "bench: the Kubernetes workload needs kube-apiserver, etcd and kubectl: run scripts/build-kube.sh (make deps does)" >&2; exit 1; }
  k8s_dir=$work/k8s
  mkdir "$k8s_dir"
  go build -o "$k8s_dir/demokube" ./e2e/demokube
  go build -o "$k8s_dir/k8sclient" ./e2e/k8sclient
  SLUICE_KUBE_BIN="$kube_bin" "$k8s_dir/demokube" -dir "$k8s_dir/kube" > "$k8s_dir/kube.env" 2> "$k8s_dir/kube.log" &
  k8s_pid=$!
  # kube-apiserver answers /readyz within seconds; up to 2 minutes.
  local i
  for i in $(seq 1200); do
    [ -s "$k8s_dir/kube.env" ] && break
    if ! kill -0 "$k8s_pid" 2>/dev/null || [ "$i" = 1200 ]; then
      echo "bench: the API server did not start within 2 minutes:" >&2; cat "$k8s_dir/kube.log" >&2; exit 1
    fi
    sleep 0.1
  done
  # KUBE_URL, KUBE_CA, KUBE_ADMIN, KUBE_TOKEN, KUBE_DIRECT and KUBECTL.
  eval "$(head -1 "$k8s_dir/kube.env")"
  k8s_port=${KUBE_URL##*:}
  k8s_version=$("$KUBECTL" --kubeconfig "$KUBE_ADMIN" version -o json | awk -F'"' '/"gitVersion"/ { v = $4 } END { print v }')

  if [ -z "${ISSUER_URL:-}" ]; then
    # The OIDC issuer, standing in for GitHub's (bench/lib.sh).
    issuer_start "$k8s_dir"
    k8s_issuer_pid=$issuer_pid
  fi
  cp /bin/sh "$k8s_dir/Runner.Worker"
}

# k8s_stop stops the API server (demokube stops kube-apiserver and etcd
# and removes its files) and the issuer k8s_start started, by their pids.
k8s_stop() {
  [ -n "$k8s_pid" ] && kill "$k8s_pid" 2>/dev/null && wait "$k8s_pid" 2>/dev/null
  [ -n "$k8s_issuer_pid" ] && kill "$k8s_issuer_pid" 2>/dev/null && wait "$k8s_issuer_pid" 2>/dev/null
  k8s_pid=""; k8s_issuer_pid=""
  return 0
}

# k8s_ruleset RECORD: the suite's ruleset additions for Kubernetes (none
# when the workload does not run): the k8s target with the service
# account's token, and a policy that grants it to jobs of acme/api at the
# record level RECORD. The default ruleset's baseline policy covers the
# target too; none of its Kubernetes rules refuses or holds a get of a pod.
k8s_ruleset() {
  [ -n "$k8s_port" ] || return 0
  cat <<HCL
target "bench-k8s" {
  protocol    = "k8s"
  address     = ["127.0.0.1:$k8s_port"]
  upstream_ca = "$KUBE_CA"
  credential "deployer" {
    user       = "system:serviceaccount:ci:deployer"
    token_file = "$KUBE_TOKEN"
    policies   = ["bench-k8s"]
  }
}
policy "bench-k8s" {
  targets = ["bench-k8s"]
  when    = identity.repository == "acme/api"
  record  = "$1"
  credential "deployer" {}
}
HCL
}

# k8s_identity gives the running sluiced the identity block that trusts
# the issuer (bench/ssh.sh's ssh_identity does when an SSH workload runs:
# the daemon reads its config only at start, so the block is appended and
# the daemon restarted), then writes the job's kubeconfig with sluice
# kubeconfig: Sluice's CA (the daemon's data dir) and TLS server name.
k8s_identity() {
  ssh_wanted || identity_restart
  local out
  out=$("$BIN/sluice" kubeconfig --server "$KUBE_URL" --data-dir "$work/data" --namespace app -o "$k8s_dir/kubeconfig" 2>&1) ||
    { echo "bench: sluice kubeconfig failed:" >&2; echo "$out" >&2; exit 1; }
}

# k8s_run MODE: one run of K8S_GETS gets in MODE. Prints "rate gets
# proxy_cpu_ticks p50_us p90_us": the rate in gets per second, the
# latencies k8sclient measured around each get (the suite keeps the last
# two in Q and NQ).
k8s_run() {
  local mode=$1 pid="" out before=0 after=0
  local cmd="$k8s_dir/k8sclient bench -namespace app -pod web -n $K8S_GETS"
  [ "$mode" = direct ] || pid=$sluiced_pid
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  probe_start "$pid"
  if [ "$mode" = direct ]; then
    out=$($cmd -kubeconfig "$KUBE_DIRECT" 2>&1) || { echo "bench: k8s-get ($mode) failed:" >&2; echo "$out" >&2; exit 1; }
  else
    out=$(ACTIONS_ID_TOKEN_REQUEST_URL="$TOKEN_URL" ACTIONS_ID_TOKEN_REQUEST_TOKEN="$REQUEST_TOKEN" \
      "$BIN/sluice" run --cgroup "$cgroup" -- "$k8s_dir/Runner.Worker" -c "$cmd -kubeconfig $k8s_dir/kubeconfig" 2>&1) ||
      { echo "bench: k8s-get ($mode) failed:" >&2; echo "$out" >&2; exit 1; }
  fi
  [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  probe_end "$K8S_GETS" get
  # {"n":500,"op":"bench","p50_us":612,"p90_us":801,"per_second":1523.4}
  printf '%s\n' "$out" | awk -v t=$((after - before)) '/"op":"bench"/ {
    match($0, /"n":[0-9]+/); n = substr($0, RSTART + 4, RLENGTH - 4)
    match($0, /"p50_us":[0-9]+/); p50 = substr($0, RSTART + 9, RLENGTH - 9)
    match($0, /"p90_us":[0-9]+/); p90 = substr($0, RSTART + 9, RLENGTH - 9)
    match($0, /"per_second":[0-9.e+]+/); rate = substr($0, RSTART + 13, RLENGTH - 13)
    printf "%.0f %d %d %d %d\n", rate, n, t, p50, p90; found = 1 }
    END { if (!found) exit 1 }' || { echo "bench: k8s-get ($mode) printed no result:" >&2; echo "$out" >&2; exit 1; }
}

# k8s_workload KEY: bench_workload with k8s_run.
k8s_workload() { local runner=k8s_run; bench_workload "$1" "$K8S_MODES"; }

# k8s_tables: the gets' rate, ratio to direct, p50 and p90, the p50 added
# over direct and the proxy's CPU per get, with the issue's target and
# whether this run met it.
k8s_tables() {
  [ -n "${R["k8s-get direct"]:-}" ] || return 0
  local m md mmin mmax dm p50 p90 dp50 added="" line cpu
  read -r dm _ _ <<<"$(stats "${R["k8s-get direct"]}")"
  read -r dp50 _ _ <<<"$(stats "${Q["k8s-get direct"]}")"
  echo
  echo "$K8S_GETS sequential gets of one pod (e2e/k8sclient, client-go asking for protobuf; kube-apiserver $k8s_version; target: at most 2 ms added per request at p50)"
  printf '| %-11s | %-24s | %-8s | %-10s | %-10s | %-10s | %-14s |\n' mode "gets/s median (min-max)" "/direct" "p50" "p90" "added p50" "proxy CPU/get"
  printf '|%s|%s|%s|%s|%s|%s|%s|\n' ------------- -------------------------- ---------- ------------ ------------ ------------ ----------------
  for m in $K8S_MODES; do
    [ -n "${R["k8s-get $m"]:-}" ] || continue
    read -r md mmin mmax <<<"$(stats "${R["k8s-get $m"]}")"
    read -r p50 _ _ <<<"$(stats "${Q["k8s-get $m"]}")"
    read -r p90 _ _ <<<"$(stats "${NQ["k8s-get $m"]}")"
    line="-"; cpu="-"
    if [ "$m" != direct ]; then
      added=$((p50 - dp50))
      line=$(printf '%+d us' "$added")
      cpu=$(paste -d' ' <(printf '%s\n' ${CPU["k8s-get $m"]}) <(printf '%s\n' ${N["k8s-get $m"]}) |
        awk -v hz="$hz" '{ t += $1; n += $2 } END { if (n > 0) printf "%.0f us", t / hz * 1e6 / n; else print "-" }')
    fi
    printf '| %-11s | %-24s | %-8s | %-10s | %-10s | %-10s | %-14s |\n' "$m" "$md ($mmin-$mmax)" \
      "$(awk -v a="$md" -v b="$dm" 'BEGIN { printf "%.2f", a / b }')" "$p50 us" "$p90 us" "$line" "$cpu"
  done
  [ -n "$added" ] && echo "k8s target (at most 2 ms added per get at p50): $(awk -v a="$added" 'BEGIN { print (a <= 2000 ? "met" : "missed") }') at $added us"
  return 0
}
