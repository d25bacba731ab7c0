"""What each disk's copy reads: everything, or the areas CBT says changed.

Runs once our snapshot exists: the change ids it recorded and the areas
QueryChangedDiskAreas gives are those of that one instant for every disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sendense_tools.backup.mode import (
    CbtState,
    Decision,
    PreviousDisk,
    RequestedMode,
    SnapshotDisk,
    decide,
    enforce,
)
from sendense_tools.vsphere.cbt import (
    CbtError,
    cbt_enabled,
    changed_areas,
    enable_cbt,
    snapshot_change_ids,
)
from sendense_tools.vsphere.connection import VsphereError, VsphereSession
from sendense_tools.vsphere.inventory import DiskInfo
from sendense_tools.vsphere.snapshots import SnapshotRef


@dataclass(frozen=True)
class DiskPlan:
    change_id: str | None  # the snapshot's, for the next incremental
    # None: a full into a fresh image (allocated extents only, zeroes skipped);
    # a list: only these areas, zeroes written (the target is an overlay).
    areas: list[tuple[int, int]] | None

    @property
    def target_is_zero(self) -> bool:
        return self.areas is None


@dataclass(frozen=True)
class CbtStatus:
    state: CbtState
    error: str = ""  # why vCenter refused to turn it on


def prepare_cbt(session: VsphereSession, vm: Any, wanted: bool) -> CbtStatus:
    """Before the snapshot: turn CBT on when it is off and wanted; say how it was.

    A refusal is not the backup's failure: that run is a full, as before CBT.
    """
    if cbt_enabled(session, vm):
        return CbtStatus("on")
    if not wanted:
        return CbtStatus("off")
    try:
        enable_cbt(session, vm)
    except VsphereError as exc:
        return CbtStatus("refused", str(exc))
    return CbtStatus("enabled")


def plan_copies(
    session: VsphereSession,
    vm: Any,
    snap: SnapshotRef,
    frozen: list[DiskInfo],
    cbt: CbtStatus,
    requested: RequestedMode,
    changed_since: dict[str, PreviousDisk] | None,
) -> tuple[Decision, dict[str, DiskPlan]]:
    """The mode (raising IncrementalRefused when `incremental` cannot be honoured) and plans.

    A full whose targets are overlays (the caller gave changed_since) writes
    the whole capacity, zeroes included: the overlay's backing holds older data.
    """
    ids = snapshot_change_ids(session, snap)
    disks = [SnapshotDisk(d.disk_id, d.key, d.capacity, ids.get(d.key)) for d in frozen]
    decision = enforce(requested, decide(requested, changed_since, disks, cbt.state, cbt.error))
    if decision.mode == "incremental" and changed_since:
        try:
            plans = {
                d.disk_id: DiskPlan(
                    d.change_id,
                    changed_areas(
                        session, vm, snap, d.key, d.capacity, changed_since[d.disk_id].change_id
                    ),
                )
                for d in disks
            }
            return decision, plans
        except CbtError as exc:
            decision = enforce(requested, Decision("full", str(exc)))
    overlays = bool(changed_since)
    return decision, {
        d.disk_id: DiskPlan(d.change_id, [(0, d.capacity)] if overlays else None) for d in disks
    }
