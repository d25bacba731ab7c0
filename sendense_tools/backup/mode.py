"""Full or incremental: an incremental only on evidence, else a full that says why.

The rules are DESIGN's "Changed block tracking" fall-backs. `decide` sees
what is known once our snapshot exists (the disks it froze, their new change
ids, whether CBT was on before this run); a fault of QueryChangedDiskAreas
later is one more reason, given by the executor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sendense_tools.backup.targets import BackupError
from sendense_tools.vsphere.cbt import CbtError, change_id_epoch

RequestedMode = Literal["auto", "full", "incremental"]
Mode = Literal["full", "incremental"]
# "on": tracking was on before this run; "enabled": this run turned it on;
# "off": it is off and stays off ([backup] cbt = false); "refused": vCenter
# would not turn it on (e.g. the account lacks the ChangeTracking privilege).
CbtState = Literal["on", "enabled", "off", "refused"]


class IncrementalRefused(BackupError):
    """`mode: incremental` was asked for, and the evidence for one is missing."""


@dataclass(frozen=True)
class PreviousDisk:
    """A disk of the point an incremental builds on; capacity and key when the caller knows."""

    change_id: str
    capacity: int | None = None
    key: int | None = None


@dataclass(frozen=True)
class SnapshotDisk:
    disk_id: str
    key: int
    capacity: int
    change_id: str | None  # the snapshot's backing.changeId


@dataclass(frozen=True)
class Decision:
    mode: Mode
    reason: str | None = None  # why a full; None for an incremental


def decide(
    requested: RequestedMode,
    changed_since: dict[str, PreviousDisk] | None,
    disks: list[SnapshotDisk],
    cbt: CbtState,
    cbt_error: str = "",
) -> Decision:
    """The mode of this run; `enforce` then refuses a full where an incremental was demanded."""
    if requested == "full":
        return Decision("full", "a full backup was asked for")
    if not changed_since:
        return Decision("full", "no previous point")
    if cbt == "off":
        return Decision("full", "CBT is off ([backup] cbt = false)")
    if cbt == "enabled":
        return Decision("full", "CBT was just enabled")
    if cbt == "refused":
        return Decision("full", f"CBT could not be enabled: {cbt_error}")
    reason = _disk_reason(changed_since, disks)
    return Decision("full", reason) if reason else Decision("incremental")


def _disk_reason(changed_since: dict[str, PreviousDisk], disks: list[SnapshotDisk]) -> str | None:
    now = {d.disk_id: d for d in disks}
    for disk_id in now:
        if disk_id not in changed_since:
            return f"{disk_id} was added"
    for disk_id in changed_since:
        if disk_id not in now:
            return f"{disk_id} was removed"
    for disk_id, prev in changed_since.items():
        d = now[disk_id]
        if prev.key is not None and prev.key != d.key:
            return f"{disk_id} was re-keyed ({prev.key} -> {d.key})"
        if prev.capacity is not None and prev.capacity != d.capacity:
            return f"{disk_id} was resized ({prev.capacity} -> {d.capacity} bytes)"
        if d.change_id is None:
            return f"{disk_id} has no change id in the snapshot"
        try:
            same_epoch = change_id_epoch(prev.change_id) == change_id_epoch(d.change_id)
        except CbtError as exc:
            return f"change id of {disk_id}: {exc}"
        if not same_epoch:
            return f"change id of {disk_id} is from another CBT epoch"
    return None


def enforce(requested: RequestedMode, decision: Decision) -> Decision:
    """`mode: incremental` fails with the reason instead of silently copying everything."""
    if requested == "incremental" and decision.mode == "full":
        raise IncrementalRefused(f"an incremental backup is not possible: {decision.reason}")
    return decision
