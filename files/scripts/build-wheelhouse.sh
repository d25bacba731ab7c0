#!/bin/bash
# Build files/wheelhouse/: a wheel of this checkout plus every runtime
# dependency, so the roles install on hosts that have no package index
# (`pip install --no-index --find-links`). Rebuilt only when the sources or
# pyproject.toml change; prints "wheelhouse: built" when it did work.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${SENDENSE_WHEELHOUSE:-$ROOT/files/wheelhouse}
PIP=${PIP:-$ROOT/.venv/bin/pip}
[ -x "$PIP" ] || PIP="/usr/bin/python3 -m pip"

HASH=$( (cat pyproject.toml; find sendense_tools -name '*.py' -type f | LC_ALL=C sort | xargs cat) | sha256sum | cut -c1-16)
STAMP=$OUT/.sendense-source-hash
if [ "$(cat "$STAMP" 2>/dev/null)" = "$HASH" ] && [ -f "$OUT/wheelhouse.tar" ]; then
  echo "wheelhouse: up to date ($OUT)"
  exit 0
fi
mkdir -p "$OUT"
BUILD=$(mktemp -d /var/tmp/sendense-wheel.XXXXXX)
trap 'rm -rf "$BUILD"' EXIT
# A fixed timestamp keeps the wheel byte-identical for identical sources, so
# the roles only reinstall when the code really changed.
export SOURCE_DATE_EPOCH=315532800
rm -f "$OUT"/sendense_tools-*.whl
$PIP wheel -q --wheel-dir "$OUT" --no-build-isolation "$ROOT" 2>"$BUILD/err" || $PIP wheel -q --wheel-dir "$OUT" "$ROOT" || {
  cat "$BUILD/err" >&2
  exit 1
}
# One deterministic archive: the roles copy a single file (fast, and unchanged
# when the wheels are).
(cd "$OUT" && tar --sort=name --mtime=@$SOURCE_DATE_EPOCH --owner=0 --group=0 --numeric-owner \
  -cf wheelhouse.tar.tmp -- *.whl && mv wheelhouse.tar.tmp wheelhouse.tar)
echo "$HASH" >"$STAMP"
echo "wheelhouse: built ($OUT)"
