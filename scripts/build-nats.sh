#!/usr/bin/env bash
# Builds the real NATS server the event tests run: nats-server
# (github.com/nats-io/nats-server/v2) at the version
# internal/testenv/natstools/go.mod pins, from the Go module proxy. The
# program is kept in a cache keyed by that module's go.mod and go.sum:
#   ${SLUICE_NATS_CACHE:-/var/cache/sluice/nats}/<hash>/nats-server
# Prints the program's path. Safe to run again: a complete entry is reused.
#
#   build-nats.sh           build unless cached, then print the path
#   build-nats.sh --cached  print the path if it is cached; otherwise say so
#                           and exit 2, building nothing
set -euo pipefail
cd "$(dirname "$0")/../internal/testenv/natstools"

key=$(cat go.mod go.sum tools.go | sha256sum | cut -c1-16)
root=${SLUICE_NATS_CACHE:-/var/cache/sluice/nats}
dir=$root/$key
recipe="recipe 1"
if [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$recipe" ]; then
  echo "$dir/nats-server"
  exit 0
fi
if [ "${1:-}" = --cached ]; then
  echo "build-nats: $dir is not built; run scripts/build-nats.sh (under a minute on 2 cores)" >&2
  exit 2
fi
mkdir -p "$root"
tmp=$(mktemp -d "$root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "build-nats: building nats-server into $dir" >&2
start=$SECONDS
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false -mod=mod"
go build -trimpath -ldflags=-s -o "$tmp/nats-server" github.com/nats-io/nats-server/v2
echo "$recipe" > "$tmp/.complete"
chmod 755 "$tmp"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "build-nats: built in $((SECONDS - start)) s" >&2
echo "$dir/nats-server"
