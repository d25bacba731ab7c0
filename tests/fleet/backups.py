"""Every node backs up its own VM at the same moment, each through its own tunnel.

Each node's CLI asks the hub (`sendense backup start --wait`, the node's token,
through its tunnel) and follows the job to its end; a backup passes when it
completed, belongs to that node and VM, and every disk's SHA-256 is the seed's.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tests.fleet.inventory import Node
from tests.infra.conftest import SENDENSE, run_ok

SEEDS = "/run/vcsim-lab/seeds"


@dataclass(frozen=True)
class Outcome:
    node: Node
    record: dict[str, Any]
    problem: str  # empty when the backup is right

    @property
    def ok(self) -> bool:
        return not self.problem


def seeds(vcenter, vms: list[str]) -> dict[str, dict[str, Any]]:
    """The seed record (disks with their SHA-256) of each VM, read on the lab vCenter."""
    code = (
        "import json, sys; "
        "print(json.dumps({v: json.load(open(f'{sys.argv[1]}/{v}.json')) for v in sys.argv[2:]}))"
    )
    return json.loads(run_ok(vcenter, "/usr/bin/python3", "-c", code, SEEDS, *vms))


def judge(node: Node, record: dict[str, Any], seed: dict[str, Any]) -> str:
    """What is wrong with a node's backup record against its VM's seed ('' when nothing)."""
    if record.get("status") != "completed":
        return f"{record.get('status', 'no record')}: {record.get('error') or 'no error given'}"
    if (record.get("node"), record.get("vm")) != (node.id, node.vm):
        return f"record of node {record.get('node')} VM {record.get('vm')}"
    want = {d["disk_id"]: d["sha256"] for d in seed["disks"]}
    got = {d["disk_id"]: d.get("sha256") for d in record.get("disk_results", [])}
    if got != want:
        wrong = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        return f"disks {', '.join(wrong)} differ from the seed"
    return ""


def back_up(host, node: Node, seed: dict[str, Any]) -> Outcome:
    cmd = host.run(f"{SENDENSE} backup start --vm {node.vm} --mode full --wait --json")
    try:
        record = json.loads(cmd.stdout)
    except ValueError:
        return Outcome(node, {}, f"exit {cmd.rc}: {cmd.stderr.strip()[-200:]}")
    return Outcome(node, record, judge(node, record, seed))


def back_up_all(hosts: dict[str, Any], nodes: list[Node], vcenter) -> tuple[list[Outcome], float]:
    """All nodes at once: their outcomes and the wall time from the first start to the last end."""
    seed = seeds(vcenter, [n.vm for n in nodes])
    start = time.monotonic()
    with ThreadPoolExecutor(len(nodes)) as pool:
        outcomes = list(pool.map(lambda n: back_up(hosts[n.name], n, seed[n.vm]), nodes))
    return outcomes, time.monotonic() - start
