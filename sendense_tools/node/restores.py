"""Restores running on this node: each validated before it is accepted, then run in a task.

A start connects to vCenter, checks that the name is free and the placement
exists before it answers (so a refusal leaves nothing behind), and hands the
session to the task. One restore per VM name at a time. Reports go to
PUT /api/v1/restores/{id}/progress; records, the final report's spool and the
stop are node/jobbook.py's, as for backups.
"""

from __future__ import annotations

import asyncio
import logging

from sendense_tools.backup.blocking import finish_blocking
from sendense_tools.errors import SendenseError
from sendense_tools.nbd.endpoint import NbdEndpoint
from sendense_tools.node.errors import BadRestore, RestoreBusy, VcenterError
from sendense_tools.node.jobbook import JobBook
from sendense_tools.node.restore_job import RestoreDiskState, RestoreJob
from sendense_tools.node.restore_schemas import RestoreStartRequest
from sendense_tools.restore.disks import flat_file
from sendense_tools.restore.executor import RestoreHooks, RestoreOutcome, restore_vm
from sendense_tools.restore.plan import RestoreDisk, RestoreOptions, RestorePhase, RestorePlan
from sendense_tools.vsphere.connection import VcenterParams, VsphereSession
from sendense_tools.vsphere.placement import (
    InvalidVmName,
    Placement,
    UnknownDatacenter,
    UnknownDatastore,
    UnknownFolder,
    UnknownResourcePool,
    VmExists,
    ensure_name_free,
    resolve_placement,
)
from sendense_tools.vsphere.vmcreate import disk_file

log = logging.getLogger("sendense.node")
CRASHED = "node restarted during the restore"
# Refusals that pass through as they are (node/api.py maps them); other vCenter errors are 502.
REFUSALS = (
    InvalidVmName, VmExists, UnknownDatacenter, UnknownDatastore, UnknownFolder,
    UnknownResourcePool,
)  # fmt: skip


def plan_of(body: RestoreStartRequest, sources: dict[str, NbdEndpoint]) -> RestorePlan:
    """The executor's plan of a start request; BadRestore when its parts disagree."""
    disks = [RestoreDisk(d.disk_id, d.capacity, d.checksum.model_dump()) for d in body.disks]
    ids = [d.disk_id for d in disks]
    if len(set(ids)) != len(ids):
        raise BadRestore(f"disks: a disk id is given twice ({', '.join(ids)})")
    if set(sources) != set(ids):
        raise BadRestore(
            f"nbd_sources name {', '.join(sources) or 'no disk'}, disks name {', '.join(ids)}"
        )
    recorded = {d.disk_id: d for d in body.hardware.disks}
    for d in disks:
        hw = recorded.get(d.disk_id)
        if hw is None:
            raise BadRestore(f"{d.disk_id}: not in the hardware's disks")
        if hw.capacity != d.capacity:
            raise BadRestore(f"{d.disk_id}: capacity {d.capacity}, the hardware has {hw.capacity}")
    keys = {c.key for c in body.hardware.controllers}
    for hw in body.hardware.disks:
        if hw.controller_key not in keys:
            raise BadRestore(f"{hw.disk_id}: controller {hw.controller_key} is not in the hardware")
    return RestorePlan(
        job_id=body.job_id, name=body.name, hardware=body.hardware.model_dump(), disks=disks,
        sources=sources, datastore=body.datastore, folder=body.folder,
        resource_pool=body.resource_pool, power_on=body.power_on,
    )  # fmt: skip


def _prepare(params: VcenterParams, plan: RestorePlan) -> tuple[VsphereSession, Placement]:
    session = VsphereSession.connect(params)
    try:
        placement = resolve_placement(
            session, plan.hardware, plan.datastore, plan.folder, plan.resource_pool
        )
        ensure_name_free(session, plan.name, placement)
    except BaseException:
        session.close()
        raise
    return session, placement


class RestoreManager(JobBook[RestoreJob, RestoreOptions]):
    kind = "restore"
    crashed = CRASHED
    from_record = staticmethod(RestoreJob.from_record)

    async def start(self, plan: RestorePlan) -> RestoreJob:
        self._refuse_existing(plan.job_id)
        self._refuse_busy(plan.name)
        try:
            (session, placement), cancelled = await finish_blocking(_prepare, self.vcenter(), plan)
        except REFUSALS:
            raise
        except SendenseError as exc:
            raise VcenterError(str(exc)) from None
        if cancelled:  # the request went away: nothing was created, the session goes
            await asyncio.to_thread(session.close)
            raise asyncio.CancelledError
        try:
            # No await from here to the registration: one job per id, one restore per name.
            self._refuse_existing(plan.job_id)
            self._refuse_busy(plan.name)
            job = self._job(plan, placement)
            self._register(job)
        except BaseException:
            await asyncio.to_thread(session.close)
            raise
        self._active[plan.name] = plan.job_id
        job.task = asyncio.create_task(
            self._run(job, session, placement, plan), name=f"restore-{plan.job_id}"
        )
        return job

    def _refuse_busy(self, name: str) -> None:
        running = self._active.get(name)
        if running is not None:
            raise RestoreBusy(f"restore {running} is already creating a VM named {name!r}")

    @staticmethod
    def _job(plan: RestorePlan, placement: Placement) -> RestoreJob:
        disks = {d.disk_id: RestoreDiskState(d.disk_id, d.capacity, d.checksum)
                 for d in plan.disks}  # fmt: skip
        files = []
        for d in plan.disks:
            descriptor = disk_file(placement, plan.name, d.disk_id)
            files += [flat_file(descriptor), descriptor]
        return RestoreJob(plan.job_id, plan.name, disks, datacenter=placement.datacenter,
                          datastore=placement.datastore, power_on=plan.power_on,
                          files=files)  # fmt: skip

    async def _run(
        self, job: RestoreJob, session: VsphereSession, placement: Placement, plan: RestorePlan
    ) -> None:
        def on_phase(phase: RestorePhase) -> None:
            job.phase = phase
            job.changed.set()

        def on_vm(moref: str, warnings: list[str]) -> None:
            job.moref, job.warnings = moref, warnings
            job.changed.set()
            # The VM exists now: a crash from here on finds it in the record.
            self._save(job.as_record())

        def on_progress(disk_id: str, written: int) -> None:
            d = job.disks.get(disk_id)
            if d is not None:
                d.bytes_written = written
                job.changed.set()

        def on_checksum(disk_id: str, checksum: dict, same: bool) -> None:
            d = job.disks.get(disk_id)
            if d is not None:
                d.checksum, d.verified = checksum, same
                job.changed.set()

        hooks = RestoreHooks(on_phase, on_vm, on_progress, on_checksum)

        async def work() -> None:
            outcome: RestoreOutcome = await restore_vm(session, placement, plan, self.options,
                                                       hooks)  # fmt: skip
            job.moref, job.warnings = outcome.moref, outcome.warnings

        await self._supervise(job, work, job.name, f"to {job.name}")

    def _failure(self, job: RestoreJob, exc: SendenseError) -> tuple[str, str]:
        # A stop's cancellation that surfaced as a vSphere error: still the stop.
        if job.cancel.is_set():
            return "cancelled", f"{job.stop_reason}: {exc}"
        return "failed", str(exc)
