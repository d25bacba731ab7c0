#!/bin/bash
# The embedded lab (inventory/lab): containers hub, node and vcenter of the lab
# image on the network sendense-lab. `lab.sh up` reuses what exists and waits
# for systemd in each; `lab.sh down` removes the containers and the network.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/files/lab/containers.conf}
IMAGE=${SENDENSE_LAB_IMAGE:-localhost/sendense-lab:latest}
NETWORK=sendense-lab
HOSTS=(vcenter hub node)

up() {
  podman network exists "$NETWORK" || podman network create "$NETWORK" >/dev/null
  for h in "${HOSTS[@]}"; do
    if ! podman container exists "$h"; then
      podman run -d --name "$h" --hostname "$h" --network "$NETWORK" --systemd=always "$IMAGE" /sbin/init >/dev/null
    elif [ "$(podman inspect -f '{{.State.Running}}' "$h")" != true ]; then
      podman start "$h" >/dev/null
    fi
  done
  for h in "${HOSTS[@]}"; do
    for _ in $(seq 60); do
      state=$(podman exec "$h" systemctl is-system-running 2>/dev/null || true)
      [ "$state" = running ] || [ "$state" = degraded ] && break
      sleep 1
    done
    [ "$state" = running ] || [ "$state" = degraded ] || { echo "lab: systemd in $h is '$state'" >&2; exit 1; }
  done
  echo "lab: up (${HOSTS[*]} on network $NETWORK)"
}

down() {
  for h in "${HOSTS[@]}"; do podman rm -f -t 5 "$h" >/dev/null 2>&1 || true; done
  podman network rm "$NETWORK" >/dev/null 2>&1 || true
  echo "lab: down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
