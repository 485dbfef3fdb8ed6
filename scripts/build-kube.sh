#!/usr/bin/env bash
# Builds the real Kubernetes parts the tests, the demo and the benchmark run:
# kube-apiserver and kubectl from k8s.io/kubernetes, and etcd from
# go.etcd.io/etcd/server/v3, at the versions internal/testenv/kubetools/go.mod
# pins. kube-apiserver alone takes about 16 minutes on 2 cores, so the
# programs are kept in a cache keyed by that module's go.mod, go.sum and
# etcd/main.go:
#   ${SLUICE_KUBE_CACHE:-/var/cache/sluice/kube}/<hash>/{kube-apiserver,etcd,kubectl}
# Prints the directory. Safe to run again: a complete cache entry is reused.
#
#   build-kube.sh           build unless cached, then print the directory
#   build-kube.sh --cached  print the directory if it is cached; otherwise
#                           say so and exit 2, building nothing (what
#                           testenv.StartKube runs: a build inside a test
#                           would outlast go test's 10-minute timeout)
set -euo pipefail
cd "$(dirname "$0")/../internal/testenv/kubetools"

key=$(cat go.mod go.sum etcd/main.go | sha256sum | cut -c1-16)
root=${SLUICE_KUBE_CACHE:-/var/cache/sluice/kube}
dir=$root/$key
# .complete holds the recipe the entry was built with. Bump it when the
# way the programs are built changes (flags, stamps), so that entries built
# the old way are rebuilt; the key stays the hash of the inputs above.
recipe="recipe 2: version-stamped"
if [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$recipe" ]; then
  echo "$dir"
  exit 0
fi
if [ "${1:-}" = --cached ]; then
  echo "build-kube: $dir is not built (or was built by an older recipe); run scripts/build-kube.sh (about 20 minutes on 2 cores)" >&2
  exit 2
fi
mkdir -p "$root"
tmp=$(mktemp -d "$root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "build-kube: building kube-apiserver, kubectl and etcd into $dir (about 20 minutes on 2 cores)" >&2
start=$SECONDS
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false -mod=mod"

# Stamp kubectl and kube-apiserver with their release version, as
# Kubernetes's hack/lib/version.sh does, so that `kubectl version` and the
# server's /version report v1.37.2 rather than v0.0.0-master. The module
# zip carries no git commit, so gitCommit stays unset.
version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' go.mod)
major=${version#v}
major=${major%%.*}
minor=${version#v*.}
minor=${minor%%.*}
stamp="-s"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  stamp+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  stamp+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done

go build -trimpath -ldflags=-s -o "$tmp/etcd" ./etcd
go build -trimpath -ldflags="$stamp" -o "$tmp/kubectl" k8s.io/kubernetes/cmd/kubectl
go build -trimpath -ldflags="$stamp" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
echo "$recipe" > "$tmp/.complete"
# Tests run kubectl as unprivileged users too.
chmod 755 "$tmp"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "build-kube: built in $((SECONDS - start)) s" >&2
echo "$dir"
