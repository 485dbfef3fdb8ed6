#!/usr/bin/env bash
# Builds the real S3-compatible server the object-store tests run: versitygw
# (github.com/versity/versitygw) at the version internal/testenv/s3tools/go.mod
# pins, from the Go module proxy. It takes about 1.5 minutes on 2 cores, so
# the program is kept in a cache keyed by that module's go.mod and go.sum:
#   ${SLUICE_S3_CACHE:-/var/cache/sluice/s3}/<hash>/versitygw
# Prints the program's path. Safe to run again: a complete entry is reused.
#
#   build-s3.sh           build unless cached, then print the path
#   build-s3.sh --cached  print the path if it is cached; otherwise say so
#                         and exit 2, building nothing
set -euo pipefail
cd "$(dirname "$0")/../internal/testenv/s3tools"

key=$(cat go.mod go.sum tools.go | sha256sum | cut -c1-16)
root=${SLUICE_S3_CACHE:-/var/cache/sluice/s3}
dir=$root/$key
recipe="recipe 1"
if [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$recipe" ]; then
  echo "$dir/versitygw"
  exit 0
fi
if [ "${1:-}" = --cached ]; then
  echo "build-s3: $dir is not built; run scripts/build-s3.sh (about 1.5 minutes on 2 cores)" >&2
  exit 2
fi
mkdir -p "$root"
tmp=$(mktemp -d "$root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "build-s3: building versitygw into $dir (about 1.5 minutes on 2 cores)" >&2
start=$SECONDS
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false -mod=mod"
go build -trimpath -ldflags=-s -o "$tmp/versitygw" github.com/versity/versitygw/cmd/versitygw
echo "$recipe" > "$tmp/.complete"
chmod 755 "$tmp"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "build-s3: built in $((SECONDS - start)) s" >&2
echo "$dir/versitygw"
