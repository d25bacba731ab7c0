"""Which restore point a new backup builds on: the newest completed point of the
same node and VM whose disks (ids and capacities) match, or none and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sendense_tools.hub.errors import NoParent
from sendense_tools.hub.store import Store


@dataclass(frozen=True)
class Parent:
    job_id: str
    # disk id -> that disk's qcow2 in the parent point, and its CBT change id.
    qcow2: dict[str, str]
    change_ids: dict[str, str]


@dataclass(frozen=True)
class Plan:
    """The hub's half of the decision; the node makes the other half after its snapshot."""

    parent: Parent | None
    # Why there is no parent (the reason of a full); None when there is one.
    reason: str | None


def choose_parent(store: Store, node: str, vm: str, disks: list[dict[str, Any]], mode: str) -> Plan:
    """The parent for `mode`; NoParent when `mode` is incremental and there is none."""
    if mode == "full":
        return Plan(None, "full requested")
    previous = store.newest_completed(node, vm)
    if previous is None:
        reason: str | None = "no previous completed point"
        found = []
    else:
        found = store.disks(previous["id"])
        reason = _difference(previous["id"], found, disks)
    if reason is not None:
        if mode == "incremental":
            raise NoParent(vm, reason)
        return Plan(None, reason)
    assert previous is not None
    return Plan(
        Parent(
            previous["id"],
            {d["disk_id"]: d["qcow2_path"] for d in found},
            {d["disk_id"]: d["change_id"] for d in found},
        ),
        None,
    )


def _difference(
    parent_id: str, before: list[dict[str, Any]], now: list[dict[str, Any]]
) -> str | None:
    """Why the previous point cannot carry an incremental of `now`'s disks (None: it can)."""
    old = {d["disk_id"]: d for d in before}
    new = {d["disk_id"]: d for d in now}
    if added := sorted(new.keys() - old.keys()):
        return f"{added[0]} was added since point {parent_id}"
    if removed := sorted(old.keys() - new.keys()):
        return f"{removed[0]} was removed since point {parent_id}"
    for disk_id, disk in new.items():
        if disk["capacity"] != old[disk_id]["capacity"]:
            return (
                f"{disk_id} was resized since point {parent_id}"
                f" ({old[disk_id]['capacity']} -> {disk['capacity']} bytes)"
            )
    for disk_id in new:
        if not old[disk_id]["change_id"]:
            return f"point {parent_id} has no change id for {disk_id}"
    return None
