#!/bin/bash
# The end of `make setup`: a lab container must boot systemd on a lab network,
# or set-up fails with one line naming what is missing. A fresh Debian 12 once
# passed every other step and then failed every container start, because
# netavark calls iptables, which nothing had installed.
set -uo pipefail
cd "$(dirname "$0")"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/containers.conf}
IMAGE=${SENDENSE_LAB_IMAGE:-localhost/sendense-lab:latest}
NETWORK=sendense-selfcheck
NAME=sendense-selfcheck-$$

fail() {
  echo "setup: lab self-check failed: $*" >&2
  exit 1
}

# What the lab's container stack runs, each named by the package that brings it.
for need in podman:podman runc:runc iptables:iptables \
  /usr/lib/podman/netavark:netavark /usr/lib/podman/aardvark-dns:aardvark-dns; do
  cmd=${need%%:*} pkg=${need##*:}
  if [[ $cmd == /* ]]; then [ -x "$cmd" ]; else command -v "$cmd" >/dev/null; fi ||
    fail "$cmd is missing (apt-get install $pkg)"
done

cleanup() {
  podman rm -f -t 0 "$NAME" >/dev/null 2>&1
  podman network rm -f "$NETWORK" >/dev/null 2>&1
}
trap cleanup EXIT
cleanup

# The last line of podman's stderr is its reason. netavark's says only "No such
# file or directory" when a program it runs (iptables) is missing from PATH.
reason() {
  local line
  line=$(grep -v '^\s*$' "$1" | tail -1)
  case $line in
    *netavark*"No such file"*) echo "$line (netavark runs iptables: apt-get install iptables)" ;;
    *) echo "$line" ;;
  esac
}
ERR=$(mktemp)
trap 'cleanup; rm -f "$ERR"' EXIT
podman network create "$NETWORK" >/dev/null 2>"$ERR" ||
  fail "podman cannot create a network: $(reason "$ERR")"
podman run -d --name "$NAME" --network "$NETWORK" --systemd=always "$IMAGE" /sbin/init \
  >/dev/null 2>"$ERR" || fail "a lab container does not start on a network: $(reason "$ERR")"
state=""
for _ in $(seq 60); do
  state=$(podman exec "$NAME" systemctl is-system-running 2>/dev/null)
  [ "$state" = running ] || [ "$state" = degraded ] && break
  sleep 0.5
done
[ "$state" = running ] || [ "$state" = degraded ] ||
  fail "systemd in a lab container is '${state:-unreachable}' after 30 s (runtime runc, see $CONTAINERS_CONF)"
podman exec "$NAME" ip -4 -o addr show scope global | grep -q inet ||
  fail "a lab container got no address on network $NETWORK"
echo "setup: lab self-check passed (a container booted systemd on network $NETWORK)"
