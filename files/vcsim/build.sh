#!/bin/bash
# Build the vCenter simulator from Debian's govmomi sources, offline.
set -euo pipefail
cd "$(dirname "$0")"
OUT=../../.cache/bin/vcsim-lab
SRC_HASH=$(cat main.go cert.go build.sh simulator/*.go | sha256sum | cut -c1-16)
if [ -x "$OUT" ] && [ "$(cat "$OUT.hash" 2>/dev/null)" = "$SRC_HASH" ]; then
  exit 0
fi
mkdir -p "$(dirname "$OUT")"
echo "setup: building the vCenter simulator"
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
cp main.go cert.go "$BUILD/"
# simulator/*.go are compiled into govmomi's simulator package (it dispatches
# SOAP methods by reflection on its own types, so new methods must live there);
# an overlay adds them without touching Debian's tree.
GOVMOMI_SIM=/usr/share/gocode/src/github.com/vmware/govmomi/simulator
{
  printf '{"Replace": {'
  sep=""
  for f in simulator/*.go; do
    printf '%s"%s/sendense_%s": "%s"' "$sep" "$GOVMOMI_SIM" "$(basename "$f")" "$PWD/$f"
    sep=", "
  done
  printf '}}\n'
} >"$BUILD/overlay.json"
cd "$BUILD"
export GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS=-mod=mod GOCACHE=${GOCACHE:-/root/.cache/go-build}
mkdir -p src/vcsimlab && mv main.go cert.go src/vcsimlab/
GOPATH="$BUILD:/usr/share/gocode" GO111MODULE=off go build -overlay "$BUILD/overlay.json" -o vcsim-lab ./src/vcsimlab
cd - >/dev/null
cp "$BUILD/vcsim-lab" "$OUT"
echo "$SRC_HASH" >"$OUT.hash"
