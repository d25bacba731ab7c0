"""What each disk's copy reads: everything, or the areas CBT says changed.

Runs once our snapshot exists: the change ids it recorded and the areas
QueryChangedDiskAreas gives are those of that one instant for every disk.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger("sendense.backup")


@dataclass(frozen=True)
class DiskPlan:
    change_id: str | None  # the snapshot's, for the next incremental
    # None: a full into a fresh image (allocated extents only, zeroes skipped);
    # a list: only these areas, zeroes written (the target is an overlay).
    areas: list[tuple[int, int]] | None
    # A full into a fresh image from a source that cannot tell holes from data (https):
    # the areas CBT reports allocated ("*"), the only ones worth reading. None: the
    # source's own extents decide (or there are none and everything is read).
    allocated: list[tuple[int, int]] | None = None

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
    allocated: bool = False,
) -> tuple[Decision, dict[str, DiskPlan]]:
    """The mode (raising IncrementalRefused when `incremental` cannot be honoured) and plans.

    A full whose targets are overlays (the caller gave changed_since) writes
    the whole capacity, zeroes included: the overlay's backing holds older data.
    `allocated`: a full into fresh images asks CBT which areas are allocated.
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
    if changed_since:
        return decision, {d.disk_id: DiskPlan(d.change_id, [(0, d.capacity)]) for d in disks}
    tracked = allocated and cbt.state in ("on", "enabled")
    return decision, {
        d.disk_id: DiskPlan(
            d.change_id, None, _allocated(session, vm, snap, d) if tracked else None
        )
        for d in disks
    }


def _allocated(
    session: VsphereSession, vm: Any, snap: SnapshotRef, disk: SnapshotDisk
) -> list[tuple[int, int]] | None:
    """The areas of `disk` CBT reports allocated; None (read everything) when it cannot
    say: that costs time, never data."""
    try:
        return changed_areas(session, vm, snap, disk.key, disk.capacity, "*")
    except CbtError as exc:
        log.warning("%s: CBT gave no allocated areas, reading it all: %s", disk.disk_id, exc)
        return None
