"""One VM backup: ONE snapshot, every disk copied concurrently, snapshot always removed.

vSphere calls are blocking (pyvmomi) and run in worker threads; the copy
engine is asyncio. The snapshot is removed in a `finally` that survives
asyncio cancellation (the node's cancel and SIGTERM both cancel the task):
the removal runs to completion in its thread and the cancellation is
re-raised afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pyVmomi import vmodl

from sendense_tools.backup.blocking import (
    each_disk,
    finish_blocking,
    keep_alive,
    naming_disk,
    run_blocking,
)
from sendense_tools.backup.mode import Decision, PreviousDisk, RequestedMode
from sendense_tools.backup.plan import DiskPlan, plan_copies, prepare_cbt
from sendense_tools.backup.sources import open_source, refuse_other_snapshots
from sendense_tools.backup.targets import BackupError, match_targets
from sendense_tools.errors import SendenseError
from sendense_tools.nbd.copy import CopyCancelled, CopyProgress, CopyResult, copy_disk
from sendense_tools.nbd.endpoint import NbdEndpoint
from sendense_tools.vsphere.connection import VcenterParams, VsphereSession
from sendense_tools.vsphere.hardware import hardware_of
from sendense_tools.vsphere.inventory import DiskInfo, VmInfo, describe_vm, find_vm
from sendense_tools.vsphere.snapshots import (
    DEFAULT_OWNER,
    REMOVE_TIMEOUT,
    SnapshotRef,
    create_snapshot,
    list_snapshots,
    remove_leftovers,
    remove_snapshot,
    snapshot_disks,
    snapshot_name,
)

log = logging.getLogger("sendense.backup")
Transport = Literal["https", "vddk", "file"]
# The steps of one backup, in order, as Hooks.on_phase names them.
Phase = Literal[
    "connecting", "describing", "creating_snapshot", "querying_changes", "starting_sources",
    "copying", "removing_snapshot",
]  # fmt: skip


@dataclass(frozen=True)
class BackupOptions:
    transport: Transport = "https"
    connections_per_disk: int = 2
    quiesce: bool = False
    file_root: str = ""
    vddk_libdir: str = "/opt/vmware-vix-disklib-distrib"
    # Needed by the vddk transport only (nbdkit reads the password from it).
    password_file: str = ""
    retry_for: float = 300.0
    # Which appliance's snapshots this run may clean up (the node id when serving).
    owner: str = DEFAULT_OWNER
    # How long vCenter may take to remove a snapshot: bounds a cancelled job's end too.
    snapshot_remove_timeout: float = REMOVE_TIMEOUT
    # Turn changed block tracking on when it is off ([backup] cbt).
    cbt: bool = True


@dataclass
class DiskOutcome:
    disk_id: str
    capacity: int
    bytes_copied: int
    bytes_zero: int
    sha256: str | None
    seconds: float
    retries: int
    change_id: str | None
    checksum: dict[str, Any] | None
    changes: dict[str, Any] | None
    areas: list[tuple[int, int]] | None  # an incremental's copied areas

    @classmethod
    def of(cls, r: CopyResult, plan: DiskPlan, incremental: bool) -> DiskOutcome:
        return cls(
            r.disk_id, r.capacity, r.bytes_copied, r.bytes_zero, r.sha256, r.seconds, r.retries,
            plan.change_id, r.checksum, r.changes,
            plan.areas if incremental else None,
        )  # fmt: skip


@dataclass
class BackupOutcome:
    vm: str
    moref: str
    snapshot: str
    seconds: float
    disks: list[DiskOutcome]
    mode: str = "full"
    mode_reason: str | None = None
    leftovers_removed: list[str] = field(default_factory=list)
    # The VM's hardware as the snapshot saw it (vsphere/hardware.py); None when it
    # could not be read, which does not fail the backup.
    hardware: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Hooks:
    """Callbacks for callers that report (CLI progress bars, the node's hub reports)."""

    on_progress: Callable[[CopyProgress], None] | None = None
    on_vm: Callable[[VmInfo], None] | None = None
    on_snapshot: Callable[[str], None] | None = None
    on_phase: Callable[[Phase], None] | None = None
    on_mode: Callable[[Decision, dict[str, DiskPlan]], None] | None = None
    on_hardware: Callable[[dict[str, Any] | None], None] | None = None

    def phase(self, phase: Phase) -> None:
        if self.on_phase:
            self.on_phase(phase)


async def backup_vm(
    params: VcenterParams,
    vm: str,
    targets: dict[str, NbdEndpoint],
    job_id: str,
    options: BackupOptions = BackupOptions(),
    hooks: Hooks = Hooks(),  # noqa: B008 - stateless default
    cancel: asyncio.Event | None = None,
    mode: RequestedMode = "auto",
    changed_since: dict[str, PreviousDisk] | None = None,
) -> BackupOutcome:
    """Back up every disk of `vm` to `targets` from ONE snapshot named sendense-<job_id>.

    `changed_since` (the previous point's change id per disk) makes an
    incremental possible, and says the targets are overlays on that point.
    """
    started = time.monotonic()
    hooks.phase("connecting")
    session, cancelled = await finish_blocking(VsphereSession.connect, params)
    try:
        if cancelled:
            raise asyncio.CancelledError
        hooks.phase("describing")
        info = await run_blocking(describe_vm, session, vm)
        if hooks.on_vm:
            hooks.on_vm(info)
        match_targets(info.disks, targets)
        vm_obj = await run_blocking(find_vm, session, info.moref)
        leftovers = await run_blocking(
            remove_leftovers, session, vm_obj, options.owner, options.snapshot_remove_timeout
        )
        # Refused before ours exists, so that nothing is left to remove.
        await _refuse_if_not_alone(session, vm_obj, info, options, None)
        cbt = await run_blocking(prepare_cbt, session, vm_obj, options.cbt)
        name = snapshot_name(job_id)
        hooks.phase("creating_snapshot")
        snap: SnapshotRef
        snap, cancelled = await finish_blocking(
            create_snapshot, session, vm_obj, name, options.quiesce, options.owner
        )
        try:
            if cancelled:
                raise asyncio.CancelledError
            if hooks.on_snapshot:
                hooks.on_snapshot(name)
            # A snapshot taken between the check above and ours: ours is then a delta too.
            await _refuse_if_not_alone(session, vm_obj, info, options, snap)
            hardware = await _hardware(session, snap, info)
            if hooks.on_hardware:
                hooks.on_hardware(hardware)
            frozen = await run_blocking(snapshot_disks, session, snap)
            hooks.phase("querying_changes")
            # Datastore HTTP access cannot tell holes from data: CBT can (vddk and file
            # sources have their own extents).
            decision, plans = await run_blocking(
                plan_copies, session, vm_obj, snap, frozen, cbt, mode, changed_since,
                options.transport == "https",
            )  # fmt: skip
            if hooks.on_mode:
                hooks.on_mode(decision, plans)
            results = await _copy_all(session, info, snap, frozen, plans, targets, options, hooks,
                                      cancel)  # fmt: skip
        except BaseException as exc:
            hooks.phase("removing_snapshot")
            try:
                await run_blocking(remove_snapshot, session, snap, options.snapshot_remove_timeout)
            except SendenseError as rm:
                # Both matter: why the copy stopped, and that a snapshot was left behind.
                raise BackupError(f"{exc or type(exc).__name__}; also {rm}") from None
            raise
        hooks.phase("removing_snapshot")
        await run_blocking(remove_snapshot, session, snap, options.snapshot_remove_timeout)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(asyncio.to_thread(session.close))
    return BackupOutcome(
        vm=info.name,
        moref=info.moref,
        snapshot=name,
        seconds=time.monotonic() - started,
        disks=[
            DiskOutcome.of(results[d.disk_id], plans[d.disk_id], decision.mode == "incremental")
            for d in info.disks
        ],
        mode=decision.mode,
        mode_reason=decision.reason,
        leftovers_removed=leftovers,
        hardware=hardware,
    )


async def _hardware(
    session: VsphereSession, snap: SnapshotRef, info: VmInfo
) -> dict[str, Any] | None:
    """The hardware as the snapshot saw it; None (and a warning) when it cannot be read:
    the backup is worth more than the record of the hardware."""
    try:
        return await run_blocking(hardware_of, session, snap.obj)
    except (SendenseError, vmodl.MethodFault, OSError, KeyError, TypeError, ValueError) as exc:
        log.warning("backup of %s: hardware not recorded: %s", info.name, exc)
        return None


async def _refuse_if_not_alone(
    session: VsphereSession,
    vm_obj: Any,
    info: VmInfo,
    options: BackupOptions,
    ours: SnapshotRef | None,
) -> None:
    if options.transport != "https":
        return
    snaps = await run_blocking(list_snapshots, session, vm_obj)
    others = [s for s in snaps if ours is None or s.moref != ours.moref]
    refuse_other_snapshots(options.transport, info.name, others)


async def _copy_all(
    session: VsphereSession,
    info: VmInfo,
    snap: SnapshotRef,
    frozen: list[DiskInfo],
    plans: dict[str, DiskPlan],
    targets: dict[str, NbdEndpoint],
    options: BackupOptions,
    hooks: Hooks,
    cancel: asyncio.Event | None,
) -> dict[str, CopyResult]:
    by_key = {d.key: d for d in frozen}
    results: dict[str, CopyResult] = {}
    keepalive = asyncio.create_task(keep_alive(session))
    try:
        async with contextlib.AsyncExitStack() as stack:
            hooks.phase("starting_sources")
            sources: dict[str, NbdEndpoint] = {}
            for disk in info.disks:
                snap_disk = by_key.get(disk.key)
                if snap_disk is None:
                    raise BackupError(f"{disk.disk_id} ({disk.label}) is missing from the snapshot")
                allocated = plans[disk.disk_id].allocated
                source = await open_source(session, info, snap, snap_disk, options, allocated)
                sources[disk.disk_id] = await stack.enter_async_context(source)

            async def one(disk: DiskInfo) -> None:
                plan = plans[disk.disk_id]
                try:
                    results[disk.disk_id] = await copy_disk(
                        disk.disk_id,
                        sources[disk.disk_id],
                        targets[disk.disk_id],
                        connections=options.connections_per_disk,
                        on_progress=hooks.on_progress,
                        cancel=cancel,
                        retry_for=options.retry_for,
                        target_is_zero=plan.target_is_zero,
                        areas=plan.areas,
                    )
                except CopyCancelled:
                    raise
                except SendenseError as exc:
                    raise BackupError(naming_disk(disk.disk_id, exc)) from None

            hooks.phase("copying")
            await each_disk(info.disks, one)
    finally:
        keepalive.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keepalive
    return results
