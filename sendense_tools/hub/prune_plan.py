"""What a prune would do, per (node, VM): which points stay and why, which go and how.

A VM is governed by the policy of its newest completed point that names one (the
hub's `[nodes.<id>.policies]` hold its keep counts). A removed point that a
remaining point builds on is merged into it; points go newest first, so that a run
of removed points folds into the one kept child above them (each copy of a full is
made once, not once per removed incremental).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from sendense_tools.hub.merge import allocated_bytes
from sendense_tools.hub.retention import Dated, keep_reasons, parse_time
from sendense_tools.policy.model import Policy

NO_POLICY = "no policy"
BACKUP_RUNNING = "a backup is running"


@dataclass
class Removal:
    id: str
    created_at: str
    action: str  # "merge" | "delete"
    into: str | None
    bytes: int
    parent: str | None  # the point's own parent: the child's new one after a merge

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "created_at": self.created_at, "action": self.action,
                "into": self.into, "bytes": self.bytes}  # fmt: skip


@dataclass
class VmPlan:
    node: str
    vm: str
    policy: str | None
    skipped: str | None = None
    kept: list[dict[str, Any]] = field(default_factory=list)
    removed: list[Removal] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {"node": self.node, "vm": self.vm, "policy": self.policy,
                "skipped": self.skipped, "kept": self.kept,
                "removed": [r.public() for r in self.removed]}  # fmt: skip


def _files(point: dict[str, Any]) -> int:
    return sum(allocated_bytes(d["qcow2_path"]) for d in point["disks"] if d["qcow2_path"])


def plan_vm(
    points: list[dict[str, Any]], policy: Policy, readers: dict[str, str]
) -> tuple[list[dict[str, Any]], list[Removal]]:
    """(kept, removed) of one VM's completed points (newest first, each with its
    `disks` rows), removals in the order they are to be made."""
    reasons = keep_reasons([Dated(p["id"], parse_time(p["created_at"])) for p in points], policy)
    parents = {p["id"]: p["parent"] for p in points}
    for p in points:
        if p["id"] in readers:
            reasons.setdefault(p["id"], []).append(f"in use by restore {readers[p['id']]}")
        children = [c for c, parent in parents.items() if parent == p["id"]]
        # Two points on one base cannot both take it in: it stays.
        if len(children) > 1:
            reasons.setdefault(p["id"], []).append(f"base of {len(children)} points")
    kept = [
        {"id": p["id"], "created_at": p["created_at"], "reasons": reasons[p["id"]]}
        for p in points
        if p["id"] in reasons
    ]
    # What each child will hold by the time a point goes into it (an estimate of the
    # merged bytes; the run measures the real ones).
    holds = {p["id"]: _files(p) for p in points}
    removed = []
    for p in points:
        if p["id"] in reasons:
            continue
        child = next((c for c, parent in parents.items() if parent == p["id"]), None)
        del parents[p["id"]]
        if child is None:
            removed.append(Removal(p["id"], p["created_at"], "delete", None, holds[p["id"]],
                                   p["parent"]))  # fmt: skip
            continue
        parents[child] = p["parent"]
        removed.append(Removal(p["id"], p["created_at"], "merge", child, holds[child], p["parent"]))
        holds[child] += holds[p["id"]]
    return kept, removed


def plan(
    points: Iterable[dict[str, Any]],
    policies: Callable[[str], dict[str, Policy] | None],
    readers: dict[str, str],
    busy: Callable[[str, str], bool],
    only_policy: str | None = None,
) -> list[VmPlan]:
    """Every VM's plan; `points`: completed rows by node, VM, newest first (with their
    `disks`); `policies(node)`: the hub's policies of a node (None: no such node);
    `busy(node, vm)`: whether a backup of it is running."""
    plans = []
    for (node, vm), group in groupby(points, key=lambda p: (p["node"], p["vm"])):
        mine = list(group)
        governing = next((p["policy"] for p in mine if p["policy"]), None)
        if only_policy is not None and governing != only_policy:
            continue
        vm_plan = VmPlan(node, vm, governing)
        configured = policies(node) or {}
        if governing is None:
            vm_plan.skipped = NO_POLICY
        elif governing not in configured:
            vm_plan.skipped = f"policy {governing} is not configured on this hub"
        elif busy(node, vm):
            vm_plan.skipped = BACKUP_RUNNING
        else:
            vm_plan.kept, vm_plan.removed = plan_vm(mine, configured[governing], readers)
        plans.append(vm_plan)
    return plans
