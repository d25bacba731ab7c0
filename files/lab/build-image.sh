#!/bin/bash
# Build the lab image (Debian bookworm, systemd as PID 1) once, and again only
# when this recipe changes. Mirror: the one this machine's apt uses.
set -euo pipefail
cd "$(dirname "$0")"
export CONTAINERS_CONF=$PWD/containers.conf
IMAGE=${SENDENSE_LAB_IMAGE:-localhost/sendense-lab:latest}
RECIPE_HASH=$(cat build-image.sh containers.conf | sha256sum | cut -c1-16)
if [ "$(podman image inspect --format '{{index .Labels "sendense.recipe"}}' "$IMAGE" 2>/dev/null)" = "$RECIPE_HASH" ]; then
  exit 0
fi
MIRROR=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
  | head -1 | awk '{print $2}' || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
echo "setup: building the lab image $IMAGE from $MIRROR (about a minute)"
ROOTFS=$(mktemp -d /var/tmp/sendense-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase \
  --include=systemd-sysv,openssh-server,python3,sudo,iproute2,ca-certificates,dbus,procps,python3-apt \
  bookworm "$ROOTFS" "$MIRROR" >/dev/null
echo "deb $MIRROR bookworm main" >"$ROOTFS/etc/apt/sources.list"
# Nothing in the lab needs a getty or udev; they only slow the boot.
chroot "$ROOTFS" systemctl mask getty@tty1.service console-getty.service \
  systemd-udevd.service systemd-logind.service >/dev/null 2>&1 || true
rm -f "$ROOTFS"/etc/ssh/ssh_host_*
tar -C "$ROOTFS" -c . | podman import \
  --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
  --change "LABEL sendense.recipe=$RECIPE_HASH" - "$IMAGE" >/dev/null
echo "setup: lab image ready"
