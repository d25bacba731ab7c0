#!/bin/bash
# One-command set-up on a fresh Debian 12 machine: Debian packages, the venv,
# the vCenter simulator and the lab image. Idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

APT_PACKAGES=(
  qemu-utils nbdkit libnbd-bin python3-libnbd python3-venv python3-pip
  openssh-server openssh-client podman runc debootstrap uidmap slirp4netns
  golang-go golang-github-vmware-govmomi-dev systemd sqlite3 curl iproute2
  ca-certificates git make netavark aardvark-dns iptables
  gcc python3-dev
  prometheus
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The package pulls in openssh-server, whose own sshd is not ours to run; and
# prometheus is here for promtool only: its server would listen on every address.
systemctl disable --now ssh >/dev/null 2>&1 || true
systemctl disable --now prometheus >/dev/null 2>&1 || true

VENV=$ROOT/.venv
STAMP=$VENV/.sendense-installed
HASH=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV (system site packages, for python3-libnbd)"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$HASH" ]; then
  echo "setup: installing sendense-tools and its dev tools into the venv"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e ".[dev]"
  echo "$HASH" >"$STAMP"
fi
"$VENV/bin/python" -c 'import nbd' || { echo "setup: python3-libnbd is not visible in the venv" >&2; exit 1; }

bash files/vcsim/build.sh
bash files/lab/build-image.sh
bash files/lab/selfcheck.sh
echo "setup: ready"
