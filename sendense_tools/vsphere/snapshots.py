"""The one VM snapshot a backup reads from, and the clean-up of old ones."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyVmomi import vim, vmodl

from sendense_tools.vsphere.connection import VsphereError, VsphereSession
from sendense_tools.vsphere.inventory import DiskInfo, disks_of_devices
from sendense_tools.vsphere.props import read_props, wait_task

# Every snapshot this tool creates is named with this prefix, so a later run
# can recognise and remove one that a crash left behind.
SNAPSHOT_PREFIX = "sendense-"
# The description names the appliance that made the snapshot: two appliances
# may share a vCenter, and one must never remove the other's snapshot while
# that backup is still running.
OWNER_MARK = "sendense-owner="
DEFAULT_OWNER = socket.gethostname()
# [backup] snapshot_remove_timeout's default.
REMOVE_TIMEOUT = 600.0


@dataclass(frozen=True)
class SnapshotRef:
    name: str
    moref: str
    obj: Any
    created: datetime | None = None
    description: str = ""

    def owned_by(self, owner: str) -> bool:
        return self.name.startswith(SNAPSHOT_PREFIX) and self.description.endswith(
            f"{OWNER_MARK}{owner}"
        )


def snapshot_name(job_id: str) -> str:
    return f"{SNAPSHOT_PREFIX}{job_id}"


def list_snapshots(session: VsphereSession, vm: vim.VirtualMachine) -> list[SnapshotRef]:
    """Every snapshot of `vm` (the whole tree, flattened); [] when it has none."""
    info = read_props(session, vm, ["snapshot"]).get("snapshot")
    out: list[SnapshotRef] = []
    stack = list(info.rootSnapshotList or []) if info is not None else []
    while stack:
        node = stack.pop()
        out.append(
            SnapshotRef(
                node.name,
                node.snapshot._moId,
                node.snapshot,
                node.createTime,
                node.description or "",
            )
        )
        stack.extend(node.childSnapshotList or [])
    return out


def create_snapshot(
    session: VsphereSession,
    vm: vim.VirtualMachine,
    name: str,
    quiesce: bool = False,
    owner: str = DEFAULT_OWNER,
) -> SnapshotRef:
    task = session.call(
        vm.CreateSnapshot_Task,
        name=name,
        description=f"Sendense backup, removed when it ends; {OWNER_MARK}{owner}",
        memory=False,
        quiesce=quiesce,
    )
    snap = wait_task(session, task, f"create snapshot {name!r}")
    if snap is None:
        raise VsphereError(f"create snapshot {name!r}: vCenter returned no snapshot")
    return SnapshotRef(name, snap._moId, snap)


def remove_snapshot(
    session: VsphereSession, snap: SnapshotRef, timeout: float = REMOVE_TIMEOUT
) -> None:
    """Remove one snapshot (not its children); an already-gone snapshot is fine.

    Waits at most `timeout` seconds for vCenter (consolidating a big delta takes a while).
    """
    try:
        task = session.call(snap.obj.RemoveSnapshot_Task, removeChildren=False, consolidate=True)
    except vmodl.fault.ManagedObjectNotFound:
        return
    wait_task(session, task, f"remove snapshot {snap.name!r}", timeout)


def remove_leftovers(
    session: VsphereSession,
    vm: vim.VirtualMachine,
    owner: str = DEFAULT_OWNER,
    timeout: float = REMOVE_TIMEOUT,
) -> list[str]:
    """Remove snapshots an earlier run on this appliance left behind; return their names."""
    removed = []
    for snap in list_snapshots(session, vm):
        if snap.owned_by(owner):
            remove_snapshot(session, snap, timeout)
            removed.append(snap.name)
    return removed


def remove_job_snapshot(
    session: VsphereSession,
    vm: vim.VirtualMachine,
    job_id: str,
    owner: str,
    timeout: float = REMOVE_TIMEOUT,
) -> list[str]:
    """Remove the snapshot job `job_id` of appliance `owner` made, if it is still there.

    Only that name with that owner mark: another appliance may run a job of the same id.
    """
    name = snapshot_name(job_id)
    removed = []
    for snap in list_snapshots(session, vm):
        if snap.name == name and snap.owned_by(owner):
            remove_snapshot(session, snap, timeout)
            removed.append(snap.name)
    return removed


def snapshot_disks(session: VsphereSession, snap: SnapshotRef) -> list[DiskInfo]:
    """The disks as the snapshot recorded them: the files that hold its frozen content."""
    devices = read_props(session, snap.obj, ["config.hardware.device"])
    return disks_of_devices(devices.get("config.hardware.device", []))
