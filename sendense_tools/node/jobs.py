"""Backups running on this node: one per VM at a time, each reporting to the hub.

The spool, the reports and the stop are node/jobbook.py's, shared with restores.
"""

from __future__ import annotations

import asyncio
import logging

from sendense_tools.backup.executor import (
    BackupOptions,
    BackupOutcome,
    Hooks,
    Phase,
    backup_vm,
)
from sendense_tools.backup.mode import Decision, PreviousDisk, RequestedMode
from sendense_tools.backup.plan import DiskPlan
from sendense_tools.backup.targets import TargetMismatch, match_targets
from sendense_tools.errors import SendenseError
from sendense_tools.nbd.copy import CopyProgress
from sendense_tools.nbd.endpoint import NbdEndpoint
from sendense_tools.node.errors import BadTargets, VcenterError, VmBusy
from sendense_tools.node.job import DiskState, Job
from sendense_tools.node.jobbook import JobBook
from sendense_tools.vsphere.connection import VsphereSession
from sendense_tools.vsphere.inventory import VmInfo, VmNotFound, describe_vm
from sendense_tools.vsphere.snapshots import snapshot_name

log = logging.getLogger("sendense.node")
CRASHED = "node restarted during the backup"


class JobManager(JobBook[Job, BackupOptions]):
    kind = "backup"
    crashed = CRASHED
    from_record = staticmethod(Job.from_record)

    async def describe(self, vm: str) -> VmInfo:
        def run() -> VmInfo:
            session = VsphereSession.connect(self.vcenter())
            try:
                return describe_vm(session, vm)
            finally:
                session.close()

        try:
            return await asyncio.to_thread(run)
        except VmNotFound:
            raise
        except SendenseError as exc:
            raise VcenterError(str(exc)) from None

    async def start(
        self,
        job_id: str,
        vm: str,
        targets: dict[str, NbdEndpoint],
        mode: RequestedMode = "auto",
        changed_since: dict[str, PreviousDisk] | None = None,
    ) -> Job:
        self._refuse_existing(job_id)
        info = await self.describe(vm)
        try:
            match_targets(info.disks, targets)
        except TargetMismatch as exc:
            raise BadTargets(str(exc)) from None
        # No await from here to the registration below: one job per id, one backup per VM.
        self._refuse_existing(job_id)
        running = self._active.get(info.moref)
        if running is not None:
            raise VmBusy(f"VM {info.name} is already being backed up (job {running})")
        job = Job(
            job_id,
            info.name,
            info.moref,
            {d.disk_id: DiskState(d.disk_id, d.capacity) for d in info.disks},
        )
        self._register(job)
        self._active[info.moref] = job_id
        job.task = asyncio.create_task(
            self._run(job, targets, mode, changed_since), name=f"backup-{job_id}"
        )
        return job

    def restore(self) -> list[Job]:
        crashed = super().restore()
        for job in crashed:
            job.error = f"{CRASHED}; removing snapshot {snapshot_name(job.job_id)}"
        return crashed

    async def _run(
        self,
        job: Job,
        targets: dict[str, NbdEndpoint],
        mode: RequestedMode,
        changed_since: dict[str, PreviousDisk] | None,
    ) -> None:
        def on_progress(p: CopyProgress) -> None:
            d = job.disks.get(p.disk_id)
            if d is not None:
                d.bytes_copied, d.bytes_total = p.bytes_done, p.bytes_total
                job.changed.set()

        def on_snapshot(name: str) -> None:
            job.snapshot = name
            job.changed.set()

        def on_phase(phase: Phase) -> None:
            job.phase = phase

        def on_mode(decision: Decision, plans: dict[str, DiskPlan]) -> None:
            job.mode, job.mode_reason = decision.mode, decision.reason
            # The areas wait for the final report: a long list would ride every running one.
            for disk_id, plan in plans.items():
                d = job.disks.get(disk_id)
                if d is not None:
                    d.change_id = plan.change_id
            job.changed.set()

        def on_hardware(hardware: dict | None) -> None:
            job.hardware = hardware
            job.changed.set()

        hooks = Hooks(on_progress=on_progress, on_snapshot=on_snapshot, on_phase=on_phase,
                      on_mode=on_mode, on_hardware=on_hardware)  # fmt: skip

        async def work() -> None:
            outcome: BackupOutcome = await backup_vm(
                self.vcenter(), job.moref, targets, job.job_id, self.options, hooks, job.cancel,
                mode, changed_since,
            )  # fmt: skip
            for r in outcome.disks:
                d = job.disks[r.disk_id]
                # What crossed the wire: the whole disk for a full, the changed areas for
                # an incremental (so a night's record shows how little it moved).
                moved = sum(length for _, length in r.areas) if r.areas else r.capacity
                d.bytes_copied, d.bytes_total, d.sha256 = moved, moved, r.sha256
                d.change_id, d.checksum, d.changes, d.areas = (
                    r.change_id, r.checksum, r.changes, r.areas
                )  # fmt: skip

        await self._supervise(job, work, job.moref, f"of {job.vm}")
