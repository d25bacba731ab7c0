"""Changed block tracking: turn it on, read a snapshot's change ids, ask what changed."""

from __future__ import annotations

from pyVmomi import vim, vmodl

from sendense_tools.vsphere.connection import VsphereError, VsphereSession
from sendense_tools.vsphere.props import read_props, wait_task
from sendense_tools.vsphere.snapshots import SnapshotRef

# QueryChangedDiskAreas' change id for "every allocated area" (what a full reads).
ALL_ALLOCATED = "*"
# More replies than this for one disk means vCenter is not advancing: stop, do not spin.
MAX_QUERIES = 1_000_000


class CbtError(VsphereError):
    """vCenter could not say what changed (a fault, or a reply that makes no sense)."""


def change_id_epoch(change_id: str) -> str:
    """The UUID part of "UUID/SEQ": it changes when CBT is reset, and then old ids mean nothing."""
    epoch, sep, seq = change_id.rpartition("/")
    if not sep or not epoch.strip() or not seq.strip():
        raise CbtError(f"{change_id!r} is not a change id (UUID/SEQUENCE)")
    return epoch


def cbt_enabled(session: VsphereSession, vm: vim.VirtualMachine) -> bool:
    return bool(read_props(session, vm, ["config.changeTrackingEnabled"]).get(
        "config.changeTrackingEnabled"
    ))  # fmt: skip


def enable_cbt(session: VsphereSession, vm: vim.VirtualMachine) -> None:
    """Turn CBT on; it takes effect at the next stun/unstun, which our snapshot is."""
    spec = vim.vm.ConfigSpec(changeTrackingEnabled=True)
    try:
        task = session.call(vm.ReconfigVM_Task, spec)
    except vmodl.MethodFault as exc:  # NoPermission comes here, not as a task error
        raise VsphereError(f"enable changed block tracking: {_fault_name(exc)} {exc.msg}") from None
    wait_task(session, task, "enable changed block tracking")


def snapshot_change_ids(session: VsphereSession, snap: SnapshotRef) -> dict[int, str | None]:
    """Each disk's backing.changeId as the snapshot recorded it, by device key (None: no id)."""
    devices = read_props(session, snap.obj, ["config.hardware.device"])
    return {
        d.key: (getattr(d.backing, "changeId", None) or None)
        for d in devices.get("config.hardware.device", [])
        if isinstance(d, vim.vm.device.VirtualDisk)
    }


def _fault_name(exc: vmodl.MethodFault) -> str:
    # pyVmomi names fault classes "vim.fault.FileFault": the last part is VMware's name.
    return type(exc).__name__.rpartition(".")[2]


def _fault(exc: vmodl.MethodFault) -> CbtError:
    text = getattr(exc, "msg", "") or ""
    return CbtError(f"QueryChangedDiskAreas: {_fault_name(exc)} {text}".rstrip())


def changed_areas(
    session: VsphereSession,
    vm: vim.VirtualMachine,
    snap: SnapshotRef,
    device_key: int,
    capacity: int,
    change_id: str,
) -> list[tuple[int, int]]:
    """The (offset, length) areas changed since `change_id` ("*": allocated), sorted, merged.

    vCenter answers a part of the disk per call: each reply covers
    [startOffset, startOffset + length), and the next call starts there, until
    the capacity is covered.
    """
    areas: list[tuple[int, int]] = []
    start = 0
    for _ in range(MAX_QUERIES):
        if start >= capacity:
            return areas
        try:
            info = session.call(
                vm.QueryChangedDiskAreas,
                snapshot=snap.obj,
                deviceKey=device_key,
                startOffset=start,
                changeId=change_id,
            )
        except vmodl.MethodFault as exc:
            raise _fault(exc) from None
        if info.length <= 0:
            raise CbtError(f"QueryChangedDiskAreas: an empty reply at offset {start}")
        for area in info.changedArea or []:
            offset, length = int(area.start), int(area.length)
            if length <= 0:
                continue
            if offset < start or offset + length > capacity:
                raise CbtError(
                    f"QueryChangedDiskAreas: area {offset}+{length} outside [{start}, {capacity})"
                )
            if areas and areas[-1][0] + areas[-1][1] >= offset:
                last_offset, last_length = areas[-1]
                areas[-1] = (last_offset, max(last_length, offset + length - last_offset))
            else:
                areas.append((offset, length))
        start = int(info.startOffset) + int(info.length)
    raise CbtError(f"QueryChangedDiskAreas: {MAX_QUERIES} replies did not cover the disk")
