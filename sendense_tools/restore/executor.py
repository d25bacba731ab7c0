"""One restore: a new VM from a restore point, every disk written and read back.

Phases: connecting (node/restores.py does it before answering: vCenter, the
name, the placement) -> creating_vm -> writing -> attaching -> verifying ->
powering_on. Whatever stops it (an error, a cancel, the node's stop) the
clean-up runs: the VM it created is destroyed and the files it uploaded are
deleted. The clean-up is one blocking call that runs to its end even when the
task is cancelled again meanwhile (as the backup's snapshot removal does); the
cancellation is passed on afterwards. The source VM is never touched: nothing
here looks it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sendense_tools.backup.blocking import finish_blocking, run_blocking
from sendense_tools.errors import SendenseError
from sendense_tools.restore.disks import write_disks
from sendense_tools.restore.plan import RestoreOptions, RestorePhase, RestorePlan
from sendense_tools.restore.readback import (
    ChecksumMismatch,
    check,
    datastore_checksum,
    matches,
)
from sendense_tools.restore.tag import tag
from sendense_tools.vsphere.connection import VsphereSession
from sendense_tools.vsphere.placement import Placement
from sendense_tools.vsphere.vmcreate import (
    attach_disks,
    create_vm,
    delete_files,
    destroy_vm,
    disk_file,
    power_on,
)


class RestoreError(SendenseError):
    """The restore failed; one line saying where."""


@dataclass
class RestoreHooks:
    """Callbacks for the node's job state (and its hub reports)."""

    on_phase: Callable[[RestorePhase], None] | None = None
    on_vm: Callable[[str, list[str]], None] | None = None  # moref, warnings
    on_progress: Callable[[str, int], None] | None = None  # disk id, bytes written
    on_checksum: Callable[[str, dict[str, Any], bool], None] | None = None

    def phase(self, phase: RestorePhase) -> None:
        if self.on_phase:
            self.on_phase(phase)


@dataclass
class RestoreOutcome:
    moref: str
    warnings: list[str]


@dataclass
class _Made:
    """What this restore created so far: what the clean-up removes."""

    vm: Any = None
    files: list[str] = field(default_factory=list)


async def restore_vm(
    session: VsphereSession,
    placement: Placement,
    plan: RestorePlan,
    options: RestoreOptions,
    hooks: RestoreHooks,
) -> RestoreOutcome:
    """Restore `plan` at `placement` through `session` (closed at the end)."""
    made = _Made()
    stop = threading.Event()
    try:
        try:
            return await _run(session, placement, plan, options, hooks, made, stop)
        except BaseException as exc:
            stop.set()
            hooks.phase("cleaning_up")
            problem, _ = await finish_blocking(_undo, session, placement, made)
            if problem is not None and not isinstance(exc, asyncio.CancelledError):
                # Both matter: why the restore stopped, and what it could not remove.
                raise RestoreError(f"{_text(exc)}; also {problem}") from None
            if problem is not None:
                raise RestoreError(f"cancelled; also {problem}") from None
            raise
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(asyncio.to_thread(session.close))


async def _run(
    session: VsphereSession,
    placement: Placement,
    plan: RestorePlan,
    options: RestoreOptions,
    hooks: RestoreHooks,
    made: _Made,
    stop: threading.Event,
) -> RestoreOutcome:
    hooks.phase("creating_vm")
    thin = options.transport == "vddk"
    (vm, warnings), cancelled = await finish_blocking(_create, session, plan, placement, thin, made)
    moref = vm._moId
    if hooks.on_vm:
        hooks.on_vm(moref, list(warnings))
    if cancelled:
        raise asyncio.CancelledError
    files = {d.disk_id: disk_file(placement, plan.name, d.disk_id) for d in plan.disks}
    hooks.phase("writing")
    await write_disks(session, placement, plan, vm, files, options, hooks, made.files, stop)
    if not thin:
        hooks.phase("attaching")
        await run_blocking(attach_disks, session, vm, plan.hardware, files)
    hooks.phase("verifying")
    await _verify(session, placement, plan, files, hooks)
    if plan.power_on:
        hooks.phase("powering_on")
        await run_blocking(power_on, session, vm)
    return RestoreOutcome(moref, list(warnings))


def _create(
    session: VsphereSession, plan: RestorePlan, placement: Placement, thin: bool, made: _Made
) -> tuple[Any, list[str]]:
    vm, warnings = create_vm(session, plan.name, plan.hardware, placement, disks_thin=thin,
                             extra_config=tag(plan.job_id))  # fmt: skip
    made.vm = vm  # in this thread, before anything can interrupt: the clean-up sees it
    return vm, warnings


async def _verify(
    session: VsphereSession,
    placement: Placement,
    plan: RestorePlan,
    files: dict[str, str],
    hooks: RestoreHooks,
) -> None:
    """Every disk read back from the datastore (each one's verdict reported), then
    ChecksumMismatch naming each disk that is not the point's."""
    wrong: list[ChecksumMismatch] = []
    for disk in plan.disks:
        actual = await datastore_checksum(
            session, placement.datacenter, files[disk.disk_id], disk.capacity
        )
        if hooks.on_checksum:
            hooks.on_checksum(disk.disk_id, actual, matches(disk.checksum, actual))
        try:
            check(disk.disk_id, disk.checksum, actual)
        except ChecksumMismatch as exc:
            wrong.append(exc)
    if wrong:
        raise ChecksumMismatch("; ".join(str(e) for e in wrong))


def _undo(session: VsphereSession, placement: Placement, made: _Made) -> str | None:
    """Destroy the VM, then delete what is left of the uploads; what failed, or None."""
    problems: list[str] = []
    if made.vm is not None:
        try:
            destroy_vm(session, made.vm)
        except Exception as exc:  # every step is tried; each failure is named
            problems.append(f"cannot destroy the new VM: {_text(exc)}")
    for file in made.files:
        try:
            delete_files(session, placement.datacenter_obj, file)
        except Exception as exc:
            problems.append(f"cannot delete {file}: {_text(exc)}")
    return "; ".join(problems) or None


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
