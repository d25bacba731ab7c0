"""What the prune tests share: a VM's points made for a policy through the real hub,
and the checks a user makes of what a prune left (qemu-img, verify, chain check)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

from sendense_tools.hub.chaincheck import check_chain
from sendense_tools.policy.model import Policy

from .chains import Vm, Write, incremental_writes
from .conftest import HubHarness

POLICY = "nightly"


def set_policy(h: HubHarness, name: str = POLICY, vms: tuple[str, ...] = ("web01",),
               **keeps: int) -> None:  # fmt: skip
    """The hub's policy `name` for node1, as a reload of hub.toml would set it."""
    counts = {"keep_last": 0, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0} | keeps
    jobs = h.hub.jobs
    entry = jobs.nodes["node1"]
    policies = {**entry.policies, name: Policy(vms=list(vms), **counts)}
    jobs.set_nodes({**jobs.nodes, "node1": entry.model_copy(update={"policies": policies})},
                   jobs.node_tokens)  # fmt: skip


async def policy_backup(
    vm: Vm, node_mode: str, policy: str | None = POLICY, writes: list[list[Write]] | None = None
) -> dict[str, Any]:
    """A completed point of `vm` started for `policy`, its data copied by the stand-in
    (`writes` per disk; default: chains.py's few MiB)."""
    body = {"vm": vm.name, "node": "node1", "policy": policy}
    code, record = await vm.h.call("POST", "/api/v1/backups", body)
    assert code == 201, record
    if writes is None and node_mode == "incremental":
        writes = [incremental_writes(d.capacity) for d in vm.disks]
    await vm.copy(record, node_mode, writes=writes)
    done = await vm.h.wait_status(record["id"])
    assert done["status"] == "completed", done["error"]
    return done


async def chain_of_three(vm: Vm) -> list[dict[str, Any]]:
    """F <- I1 <- I2, oldest first."""
    points = [await policy_backup(vm, "full")]
    for _ in range(2):
        points.append(await policy_backup(vm, "incremental"))
    assert [p["parent"] for p in points] == [None, points[0]["id"], points[1]["id"]]
    return points


def qcow2s(record: dict[str, Any]) -> list[Path]:
    return [Path(d["qcow2_path"]) for d in record["disk_results"]]


def flat_copy(qcow2: Path, where: Path) -> Path:
    """The point's whole disk as it reads now, through its chain, as a standalone file."""
    copy = where / f"{qcow2.parent.name}-{qcow2.name}.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", str(qcow2),
                    str(copy)], check=True)  # fmt: skip
    return copy


def copies(records: list[dict[str, Any]], where: Path) -> dict[Path, Path]:
    where.mkdir(exist_ok=True)
    return {q: flat_copy(q, where) for r in records for q in qcow2s(r)}


def same_as_copies(taken: dict[Path, Path]) -> None:
    """Each image reads exactly as its copy, byte for byte (`qemu-img compare`)."""
    for image, copy in taken.items():
        done = subprocess.run(["qemu-img", "compare", "-U", "-f", "qcow2", "-F", "raw",
                               str(image), str(copy)], capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, f"{image} no longer reads as before: {done.stdout}"


def check_clean(path: Path) -> None:
    done = subprocess.run(["qemu-img", "check", "-U", "-f", "qcow2", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


async def assert_points_sound(h: HubHarness, records: list[dict[str, Any]]) -> None:
    """Every remaining point verifies (the hub's own verify), passes the restore's chain
    check, and every file of it passes qemu-img check."""
    for r in records:
        code, verified = await h.call("POST", f"/api/v1/backups/{r['id']}/verify", {})
        assert code == 200 and verified["ok"], verified
        await check_chain(h.hub.jobs.store, r["id"])
        for q in qcow2s(r):
            await asyncio.to_thread(check_clean, q)


def merge_leftovers(root: Path) -> list[Path]:
    return sorted(root.rglob(".merge-*"))


async def prune(h: HubHarness, token: str | None = None, **body: Any) -> tuple[int, Any]:
    return await h.call("POST", "/api/v1/prune", body, token)
