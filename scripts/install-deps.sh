#!/usr/bin/env bash
# Installs what Sluice's build, tests and demo need on Debian 12 / Ubuntu
# 24.04: server and client packages from apt, Go modules from the module
# proxy. Safe to run again: it installs only what is missing.
set -euo pipefail

packages=(
  clang llvm            # make generate: bpf2go compiles bpf/*.c
  gcc libc6-dev         # cgo for pg_query_go
  postgresql postgresql-client  # private test servers and psql/pgbench
  iproute2 util-linux   # ip netns for test hosts, setpriv
  tshark                # e2e: exported recordings decode as PostgreSQL
  openssh-server openssh-client  # e2e: git over ssh relayed by the default ruleset (sshd run by the test)
  rsync                 # e2e: rsync over ssh through the SSH decoder (and testenv.StartSSHD's own test)
  asciinema             # e2e: SSH terminal recordings exported as asciicast play (asciinema cat)
  mariadb-client        # e2e and decoder/mysql: the refusal as a real client prints it
  mariadb-server        # private test servers (testenv.StartMariaDB) and make bench (10.11 on Debian 12)
  sysbench              # make bench: the MySQL workloads (oltp_point_select, oltp_read_only)
  pgbouncer             # make bench: the proxy users already run
  curl                  # the demo scrapes sluiced's /metrics
  docker.io             # container jobs: tests and the demo start a private dockerd (testenv.StartDocker)
  busybox-static        # the userland of the test image, built from local files (no registry)
  systemd               # packaging test: systemd-analyze verify on the units (nothing is started)
  git make ca-certificates
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing packages ${missing[*]}; run as root (sudo make deps)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; they may not.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -q
  # The servers these packages bring (the postgresql package's cluster,
  # mariadb-server, pgbouncer, sshd) are never used: tests, the demo and
  # the benchmark start private ones. Their maintainer scripts start them
  # through invoke-rc.d or deb-systemd-invoke, which both ask
  # /usr/sbin/policy-rc.d first; one that exits 101 ("action forbidden")
  # keeps them stopped, so the install leaves no server running. A
  # policy-rc.d that was there before (container images ship one) is left
  # as it is; ours is removed afterwards, however the install ends.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    trap 'rm -f "$policy"' EXIT
    printf '#!/bin/sh\n# install-deps.sh: start no service while it installs packages.\nexit 101\n' > "$policy"
    chmod 755 "$policy"
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# docker.io enables the system daemon (and the containerd it brings) at
# boot. Tests and the demo never use it: each starts its own dockerd with
# its data, sockets and containers below a temporary directory, so the
# system units stay disabled (and, per policy-rc.d above, stopped).
if command -v systemctl >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  for unit in docker.service docker.socket containerd.service; do
    if systemctl is-enabled --quiet "$unit" 2>/dev/null; then
      echo "install-deps: disabling $unit (tests run their own dockerd)"
      systemctl disable "$unit" 2>/dev/null || true
    fi
  done
fi

if ! command -v go >/dev/null 2>&1; then
  echo "install-deps: Go is not on PATH; install Go 1.26 or newer (README: Requirements)" >&2
  exit 1
fi
go mod download

# kube-apiserver, etcd and kubectl for the Kubernetes tests
# (testenv.StartKube): built from source at the versions
# internal/testenv/kubetools pins, into a cache keyed by them. The first
# build takes about 20 minutes on 2 cores; later runs reuse the cache at
# once. It prints the cache directory, which install-deps does not need.
"$(dirname "$0")/build-kube.sh" >/dev/null

# versitygw, the S3-compatible server of the object-store tests
# (testenv.StartS3): built from the Go module proxy at the version
# internal/testenv/s3tools pins, into a cache keyed by it (about 1.5
# minutes on 2 cores the first time).
"$(dirname "$0")/build-s3.sh" >/dev/null

# nats-server with JetStream, the message bus of the event tests
# (testenv.StartNATS): built from the Go module proxy at the version
# internal/testenv/natstools pins, into a cache keyed by it (about 40 s on
# 2 cores the first time).
"$(dirname "$0")/build-nats.sh" >/dev/null
