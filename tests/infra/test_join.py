"""A node deployed with playbooks/deploy-node.yml onto a running hub gets its own
slots without touching the nodes already there.

Molecule's `fleet` scenario converges the hub with nodes A and B only; its
verify step runs this module first, with SENDENSE_INFRA_JOIN naming the node to
deploy (in the scenario's `joining` group) and SENDENSE_INFRA_JOIN_INVENTORY the
scenario's inventory. Skipped anywhere else.

While it joins, node A backs up a big lab VM: the hub reloads its node table
(SIGHUP) instead of restarting, so that backup completes bit-identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.infra.conftest import SENDENSE, VENV, hosts_for, read_toml, run_ok

ROOT = Path(__file__).resolve().parents[2]
HUB_TOML = "/etc/sendense/hub.toml"
NODE_TOML = "/etc/sendense/node.toml"
TUNNEL_TOML = "/etc/sendense/tunnel.toml"
REGISTRY = "/etc/sendense/registry"
KEYS = "/etc/ssh/sendense_tunnel_keys"
# Makes the joining group part of `nodes` for the deploy-node.yml run.
JOIN_INVENTORY = "all:\n  children:\n    nodes:\n      children:\n        joining:\n"
# A spare simulator VM (molecule/fleet's host_vars), big enough that its copy
# still runs when the hub takes the new node. The backup starts when the
# playbook reaches the hub role's config.yml (its first task's name), a few
# tasks before the reload: from the node's registration on, the copy of 3 GiB
# ended 15 s before the reload (measured in the fleet scenario).
BIG_VM = "DC0_C0_RP0_VM4"
BIG_DISKS = "1536M,1536M"
REGISTERING = "Read the running hub.toml"
RELOADED = "reloaded the node table"


def _state_of(hub, node, node_id: str, socket_dir: str) -> dict[str, str]:
    """What the hub and the node hold for one node: digests, stats, effective sshd policy."""
    user = f"sdt-{node_id}"
    files = [f"{REGISTRY}/{node_id}.json", f"{KEYS}/{user}", f"/etc/sendense/nodes/{node_id}.token"]
    state = {path: run_ok(hub, "sha256sum", path).split()[0] for path in files}
    state["socket dir"] = run_ok(hub, "stat", "-c", "%i %U %G %a", f"{socket_dir}/{node_id}")
    state["sshd policy"] = run_ok(
        hub, "/usr/sbin/sshd", "-T", "-C", f"user={user},host=n,addr=127.0.0.1"
    )
    for path in (NODE_TOML, TUNNEL_TOML):
        state[f"node {path}"] = run_ok(node, "sha256sum", path).split()[0]
    state["tunnel since"] = run_ok(
        node, "systemctl", "show", "-p", "ActiveEnterTimestampMonotonic", "sendense-tunnel"
    )
    return state


@pytest.fixture(scope="module")
def joined():
    name = os.environ.get("SENDENSE_INFRA_JOIN")
    inventory = os.environ.get("SENDENSE_INFRA_JOIN_INVENTORY")
    if not name or not inventory:
        pytest.skip("no node to join (SENDENSE_INFRA_JOIN, SENDENSE_INFRA_JOIN_INVENTORY)")
    return name, inventory


def _seed_big_vm(vcenter, thumbprint: str) -> dict:
    return json.loads(
        run_ok(
            vcenter, f"{VENV}/bin/python", "-m", "sendense_tools.lab", "seed",
            "--vcenter", "https://127.0.0.1/sdk", "--thumbprint", thumbprint,
            "--vm", BIG_VM, "--disks", BIG_DISKS, "--seed", "join", "--json",
        )
    )  # fmt: skip


def _start_backup(node, vm: str) -> str:
    return json.loads(
        run_ok(node, SENDENSE, "backup", "start", "--vm", vm, "--mode", "full", "--json")
    )["id"]


def _record(node, backup_id: str) -> dict:
    return json.loads(run_ok(node, SENDENSE, "backup", "show", backup_id, "--json"))


def _wait_for(node, backup_id: str) -> dict:
    deadline = time.monotonic() + 600
    while (record := _record(node, backup_id))["status"] in ("pending", "running"):
        assert time.monotonic() < deadline, f"backup {backup_id} still running: {record}"
        time.sleep(2)
    return record


def _main_pid(hub) -> str:
    return run_ok(hub, "systemctl", "show", "-p", "MainPID", "--value", "sendense-hub").strip()


def _hub_clock(hub) -> str:
    return run_ok(hub, "date", "+%s").strip()


def _journal_since(hub, since: str) -> list[tuple[float, str]]:
    """(seconds since the epoch, message) of the hub's journal lines since `since`."""
    out = run_ok(
        hub, "journalctl", "--no-pager", "-u", "sendense-hub", "-o", "json", "--since", f"@{since}"
    )
    entries = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [(int(e["__REALTIME_TIMESTAMP"]) / 1e6, str(e.get("MESSAGE", ""))) for e in entries]


def test_deploy_node_onto_existing_hub_touches_no_other_node(request, joined, vcenters):
    name, inventory = joined
    (hub,) = hosts_for(request.config, "hub")
    nodes = hosts_for(request.config, "node")
    joining = next(n for n in nodes if n.backend.get_pytest_id().endswith(name))
    others = [n for n in nodes if n is not joining]
    hub_conf = read_toml(hub, HUB_TOML)
    socket_dir = hub_conf["nbd"]["socket_dir"]
    ids = {n: read_toml(n, NODE_TOML)["node"]["id"] for n in others}
    assert set(ids.values()) == set(hub_conf["nodes"]), "the joining node is registered already"
    before = {ids[n]: _state_of(hub, n, ids[n], socket_dir) for n in others}
    # The vCenter certificate's thumbprint an operator pins (the lab measured it).
    thumbprint = read_toml(others[0], NODE_TOML)["vcenter"]["thumbprint"]

    backer = others[0]
    seed = _seed_big_vm(vcenters[0], thumbprint)
    hub_pid = _main_pid(hub)
    since = _hub_clock(hub)

    # The extra inventory sits next to the scenario's, so its group_vars apply too.
    with tempfile.NamedTemporaryFile(
        "w", suffix=".yml", dir=Path(inventory).parent, prefix="join-", delete=False
    ) as extra:
        extra.write(JOIN_INVENTORY)
    backup_id = None
    try:
        with subprocess.Popen(
            ["ansible-playbook", "-i", inventory, "-i", extra.name,
             "-e", f"sendense_node_vcenter_thumbprint={thumbprint}",
             str(ROOT / "playbooks" / "deploy-node.yml"), "--limit", name],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        ) as run:  # fmt: skip
            output = []
            for line in run.stdout:
                output.append(line)
                if backup_id is None and REGISTERING in line:
                    backup_id = _start_backup(backer, BIG_VM)
            returncode = run.wait(timeout=900)
    finally:
        os.unlink(extra.name)
    assert returncode == 0, "".join(output)[-5000:]
    assert backup_id is not None, f"the playbook never ran {REGISTERING!r}"
    running_after_deploy = _record(backer, backup_id)["status"] in ("pending", "running")

    # The hub took the new node by a reload: same process, and it says so.
    assert _main_pid(hub) == hub_pid, "the hub restarted: every running backup failed"
    reloads = [t for t, msg in _journal_since(hub, since) if RELOADED in msg]
    assert reloads, f"no {RELOADED!r} in the hub's journal"

    record = _wait_for(backer, backup_id)
    assert record["status"] == "completed", record
    got = {d["disk_id"]: d["sha256"] for d in record["disk_results"]}
    assert got == {d["disk_id"]: d["sha256"] for d in seed["disks"]}
    verify = json.loads(run_ok(backer, SENDENSE, "backup", "verify", backup_id, "--json"))
    assert verify["ok"], verify
    finished = datetime.fromisoformat(record["finished_at"]).timestamp()
    assert running_after_deploy or reloads[0] < finished, (
        f"the backup ended before the hub reloaded: make {BIG_VM} bigger than {BIG_DISKS}"
    )

    after = {ids[n]: _state_of(hub, n, ids[n], socket_dir) for n in others}
    for node_id, was in before.items():
        changed = [k for k, v in was.items() if after[node_id][k] != v]
        assert not changed, f"deploying {name} changed node {node_id}: {changed}"

    # Its own slots: its own socket directory, its own Match block, a tunnel
    # with every forward up, and a pool that starts at the first slot.
    new_id = read_toml(joining, NODE_TOML)["node"]["id"]
    conf = read_toml(hub, HUB_TOML)
    assert new_id in conf["nodes"]
    directory = hub.file(f"{socket_dir}/{new_id}")
    assert directory.is_directory and directory.group == f"sdt-{new_id}"
    assert directory.mode == 0o2750
    policy = run_ok(hub, "/usr/sbin/sshd", "-T", "-C", f"user=sdt-{new_id},host=n,addr=127.0.0.1")
    first = conf["nbd"]["port_range"].split("-")[0]
    assert f"{socket_dir}/{new_id}/{first}.sock" in policy, policy[-2000:]
    forwards = read_toml(joining, TUNNEL_TOML)["forwards"]
    assert forwards["nbd_socket_dir"] == f"{socket_dir}/{new_id}"
    deadline = time.monotonic() + 120
    while True:
        status = json.loads(run_ok(joining, SENDENSE, "tunnel", "status", "--json"))
        if status["connected"] and status["forwards_up"] == status["forwards_total"]:
            break
        assert time.monotonic() < deadline, f"{name}'s tunnel is not up: {status}"
        time.sleep(1)
