#!/bin/bash
# `make demo`: the whole product on the embedded lab. Starts (or reuses) the
# hub, node and vcenter containers, deploys them with Ansible, backs up the
# seeded 3-disk VM through the hub, verifies with testinfra, changes the VM and
# backs it up as an incremental, restores the first (full) point as a new VM,
# shows the policy timers, runs the lab policy once and a prune dry run, and
# summarises.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/files/lab/containers.conf}
export ANSIBLE_CONFIG=$ROOT/ansible.cfg ANSIBLE_ROLES_PATH=$ROOT/roles
BIN=$ROOT/.venv/bin
SENDENSE=/opt/sendense/venv/bin/sendense
T0=$(date +%s)
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

step "Lab: containers hub, node, vcenter"
bash files/scripts/lab.sh up

step "Deploy: ansible-playbook -i inventory/lab playbooks/site.yml"
"$BIN/ansible-playbook" -i inventory/lab playbooks/site.yml

# A lab container started again after missing a 02:00 catches its policy timers up
# (Persistent=true): let such a run end before the demo backs up the same VM.
podman exec node sh -c 'for _ in $(seq 300); do
  [ -z "$(systemctl list-units --no-legend --state=activating,active "sendense-policy@*")" ] && exit 0
  sleep 2; done; echo "demo: a policy run still runs after 10 minutes" >&2; exit 1'

podman exec vcenter cat /run/vcsim-lab/seed.json >"$TMP/seed.json"
VM=$("$BIN/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["vm"])' "$TMP/seed.json")

newest() {  # the id of the VM's newest backup on the hub
  podman exec hub "$SENDENSE" backup list --vm "$VM" --json >"$TMP/list.json"
  "$BIN/python" -c '
import json, sys
records = json.load(open(sys.argv[1]))
records = records["backups"] if isinstance(records, dict) else records
print(max(records, key=lambda r: r["created_at"])["id"])' "$TMP/list.json"
}

point_contents() {  # {disk id: SHA-256} of a point's disks, read by qemu-nbd -r on the hub
  "$BIN/python" -c '
import json, sys
for d in json.load(open(sys.argv[1]))["disk_results"]:
    print(d["disk_id"] + "=" + d["qcow2_path"])' "$1" >"$TMP/disks.txt"
  # shellcheck disable=SC2046
  podman exec hub /opt/sendense/venv/bin/python -c '
import json, sys
from sendense_tools.nbd.digest import sha256_of_image
print(json.dumps({d: sha256_of_image(p) for d, _, p in (a.partition("=") for a in sys.argv[1:])}))' \
    $(cat "$TMP/disks.txt")
}

step "Backup: sendense backup start --vm $VM --mode full --wait (on the node, through the tunnel)"
TTY=(); [ -t 1 ] && TTY=(-t)
podman exec "${TTY[@]}" node "$SENDENSE" backup start --vm "$VM" --mode full --wait
ID=$(newest)
podman exec hub "$SENDENSE" backup show "$ID" --json >"$TMP/record.json"

step "Verify: testinfra suites (tests/infra) against the lab"
SENDENSE_INFRA_HUBS=podman://hub SENDENSE_INFRA_NODES=podman://node SENDENSE_INFRA_VCENTERS=podman://vcenter \
  "$BIN/pytest" -p no:cacheprovider -q tests/infra

step "Change: scattered blocks of every disk of $VM (new data, zeroes, across a 4 MiB border)"
podman exec vcenter /opt/sendense/venv/bin/python -m sendense_tools.lab change \
  --vcenter https://127.0.0.1/sdk --vm "$VM" --insecure --json >"$TMP/changes.json"

step "Incremental: sendense backup start --vm $VM --mode incremental --wait"
podman exec "${TTY[@]}" node "$SENDENSE" backup start --vm "$VM" --mode incremental --wait || true
INC=$(newest)
podman exec hub "$SENDENSE" backup show "$INC"
podman exec hub "$SENDENSE" backup show "$INC" --json >"$TMP/incremental.json"
podman exec hub "$SENDENSE" backup verify "$INC" --json >"$TMP/verify.json" || true
# Independently of the hub's checksums: each disk of the point, read through its
# chain by qemu-nbd -r, against the SHA-256 of the changed VM disk.
point_contents "$TMP/incremental.json" >"$TMP/contents.json"

RESTORED="$VM-restored"
step "Restore: the first (full) point $ID as a new VM $RESTORED (the incremental $INC stays the newest)"
# A demo run before this one restored under the same name: remove that VM first.
podman exec vcenter /opt/sendense/venv/bin/python -m sendense_tools.lab destroy \
  --vcenter https://127.0.0.1/sdk --vm "$RESTORED" --insecure
podman exec "${TTY[@]}" node "$SENDENSE" restore start --backup "$ID" --to "$RESTORED" --wait || true
podman exec hub "$SENDENSE" restore list --backup "$ID" --json >"$TMP/restores.json"
RID=$("$BIN/python" -c '
import json, sys
records = json.load(open(sys.argv[1]))
records = records["restores"] if isinstance(records, dict) else records
mine = [r for r in records if r["name"] == sys.argv[2]]
print(max(mine, key=lambda r: r["created_at"])["id"] if mine else "")' \
  "$TMP/restores.json" "$RESTORED")
[ -n "$RID" ] || { echo "demo: FAILED: the hub has no restore of $ID as $RESTORED" >&2; exit 1; }
podman exec hub "$SENDENSE" restore show "$RID" --json >"$TMP/restore.json"
NEWEST=$(newest)
# Independently of the node's read-back: the new VM's disk files on the simulator's
# datastore against the first point's qcow2 read by qemu-nbd -r on the hub.
point_contents "$TMP/record.json" >"$TMP/full-contents.json"
podman exec vcenter /opt/sendense/venv/bin/python -m sendense_tools.lab disks \
  --vcenter https://127.0.0.1/sdk --vm "$RESTORED" --insecure --json >"$TMP/restored-disks.json" \
  || echo '{"disks": []}' >"$TMP/restored-disks.json"

podman exec vcenter /opt/sendense/venv/bin/python -m sendense_tools.lab snapshots \
  --vcenter https://127.0.0.1/sdk --vm "$VM" --insecure --json >"$TMP/snapshots.json"
EXPOSURE=()
for pair in hub:sendense-hub node:sendense-node node:sendense-tunnel; do
  host=${pair%%:*} unit=${pair#*:}
  score=$(podman exec "$host" systemd-analyze security --no-pager "$unit.service" \
    | awk 'match($0, /Overall exposure level.*: [0-9.]+/) { n = split(substr($0, RSTART, RLENGTH), f, " "); print f[n] }')
  EXPOSURE+=(--exposure "$unit=$score")
done

step "Policies: systemctl list-timers 'sendense-*' on the node (backups) and the hub (prune)"
podman exec node systemctl list-timers --all --no-pager 'sendense-*'
podman exec hub systemctl list-timers --all --no-pager 'sendense-*'

step "Policy run: systemctl start sendense-policy@lab.service (what its timer starts), and its journal"
SINCE=$(podman exec node date -u '+%Y-%m-%d %H:%M:%S')
podman exec node systemctl start sendense-policy@lab.service \
  || echo "demo: the lab policy's run failed (its journal below)" >&2
podman exec node journalctl -u sendense-policy@lab.service --since "$SINCE" --no-pager -o cat

step "Retention: sendense backup prune --dry-run (keep_last 2: the older points would be merged away)"
podman exec hub "$SENDENSE" backup prune --dry-run || echo "demo: the prune dry run failed" >&2

step "Summary ($(( $(date +%s) - T0 )) s)"
"$BIN/python" -m sendense_tools.lab summary --record "$TMP/record.json" --seed "$TMP/seed.json" \
  --snapshots "$TMP/snapshots.json" "${EXPOSURE[@]}" \
  --incremental "$TMP/incremental.json" --changes "$TMP/changes.json" \
  --verify "$TMP/verify.json" --contents "$TMP/contents.json" \
  --restore "$TMP/restore.json" --newest "$NEWEST" --point-contents "$TMP/full-contents.json" \
  --restored-disks "$TMP/restored-disks.json"

cat <<EOT

The lab is still running. Look around:
  podman exec -it node bash                      # the customer-site appliance
  podman exec node sendense tunnel status
  podman exec hub sendense backup list           # records on the hub
  podman exec -it node sendense backup start --vm $VM --wait   # an incremental (auto)
  podman exec hub sendense backup show ID         # a point and its chain
  podman exec -it node sendense restore start --backup ID --to NEW_NAME --wait   # a point as a new VM
  podman exec hub sendense restore list           # restores, each disk checked on read-back
  hub API  http://127.0.0.1:8082 (inside hub; token /etc/sendense/api-token)
  node API http://127.0.0.1:8081 (inside node), reached from the hub at its reverse port
Remove it with: make lab-down
EOT
