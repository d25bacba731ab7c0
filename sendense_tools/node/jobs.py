"""Backups running on this node: one per VM at a time, each reporting to the hub.

Every job is recorded in the spool when it starts and when it ends, so that a
restarted node still answers for the jobs of its previous run and can clean up
after the ones it crashed in (node/recovery.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

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
from sendense_tools.node.errors import (
    BadTargets,
    JobExists,
    JobNotFound,
    SpoolError,
    VcenterError,
    VmBusy,
)
from sendense_tools.node.job import DiskState, Job
from sendense_tools.node.outbox import ReportOutbox
from sendense_tools.node.reporter import HubReporter
from sendense_tools.node.stopping import BACKUPS_WAIT_DEFAULT, REPORT_GRACE
from sendense_tools.vsphere.connection import VcenterParams, VsphereSession
from sendense_tools.vsphere.inventory import VmInfo, VmNotFound, describe_vm
from sendense_tools.vsphere.snapshots import snapshot_name

log = logging.getLogger("sendense.node")
# Finished jobs kept for GET /api/v1/backup/{job_id}; the hub keeps the history.
KEEP_FINISHED = 200
CRASHED = "node restarted during the backup"


class JobManager:
    def __init__(
        self,
        vcenter: Callable[[], VcenterParams],
        options: BackupOptions,
        reporter: HubReporter,
        outbox: ReportOutbox,
        stop_wait: float = BACKUPS_WAIT_DEFAULT,
        on_abandon: Callable[[], None] | None = None,
    ) -> None:
        # A callable so a rotated password file is read at each backup.
        self.vcenter = vcenter
        self.options = options
        self.reporter = reporter
        self.outbox = outbox
        self.spool = outbox.spool
        # How long a stop waits for cancelled backups (node/stopping.py), and what
        # it does with those that did not end in time.
        self.stop_wait = stop_wait
        self.on_abandon = on_abandon
        self.jobs: dict[str, Job] = {}
        self._active_vm: dict[str, str] = {}  # moref -> job_id
        self.background: list[asyncio.Task] = []

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
        running = self._active_vm.get(info.moref)
        if running is not None:
            raise VmBusy(f"VM {info.name} is already being backed up (job {running})")
        job = Job(
            job_id,
            info.name,
            info.moref,
            {d.disk_id: DiskState(d.disk_id, d.capacity) for d in info.disks},
        )
        # Recorded before anything exists in vCenter: a crash from here on is found at start.
        self.spool.save_job(job.as_dict())
        self._forget_old()
        self.jobs[job_id] = job
        self._active_vm[info.moref] = job_id
        job.task = asyncio.create_task(
            self._run(job, targets, mode, changed_since), name=f"backup-{job_id}"
        )
        return job

    def _refuse_existing(self, job_id: str) -> None:
        if job_id in self.jobs:
            raise JobExists(f"job {job_id} already exists on this node")

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.finished_at is not None]
        for job in sorted(finished, key=lambda j: j.finished_at or 0)[: -KEEP_FINISHED or None]:
            del self.jobs[job.job_id]
            self.spool.forget_job(job.job_id)

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} does not exist on this node")
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        job.stop()
        return job

    def running(self) -> int:
        return sum(1 for j in self.jobs.values() if j.status == "running")

    # -- a previous run's jobs ---------------------------------------------------

    def restore(self) -> list[Job]:
        """Load the previous run's jobs; return those it crashed in (now failed, to clean up).

        Their records stay `running` on disk until the clean-up is done, so a
        crash during it is found again at the next start.
        """
        records = self.spool.jobs()
        for job_id, entry in self.spool.reports().items():
            # The node stopped between spooling the final report and rewriting the record.
            if records.get(job_id, {}).get("status", "running") == "running":
                records[job_id] = entry["job"]
                self._save(entry["job"])
        crashed = []
        for record in records.values():
            try:
                job = Job.from_record(record)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                log.error("spool: ignoring the malformed record of %r: %r", record, exc)
                continue
            if job.status == "running":
                job.status, job.phase, job.finished_at = "failed", None, time.time()
                job.error = f"{CRASHED}; removing snapshot {snapshot_name(job.job_id)}"
                crashed.append(job)
            self.jobs[job.job_id] = job
        self._forget_old()
        return crashed

    def finish_recovered(self, job: Job, what: str) -> None:
        """A crashed job cleaned up (`what` says how): the hub is told, the record closed."""
        job.error = f"{CRASHED}; {what}"
        log.warning("backup %s of %s: %s", job.job_id, job.vm, job.error)
        self._close(job)

    # -- running -----------------------------------------------------------------

    async def shutdown(self) -> None:
        """Cancel every running backup and clean-up; wait (bounded) for them to end.

        Each lets its vSphere call in flight end and removes its snapshot. What is
        still running after `stop_wait` is left to the next start (its record
        still says running) and handed to `on_abandon`.
        """
        for job in self.jobs.values():
            if job.status == "running" and job.task is not None:
                job.cancel.set()
        tasks = [j.task for j in self.jobs.values() if j.task is not None and not j.task.done()]
        tasks += [t for t in self.background if not t.done()]
        for task in tasks:
            task.cancel()
        late: set[asyncio.Task] = set()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.stop_wait)
        await self.outbox.drain(REPORT_GRACE)
        if late:
            log.error("%d backup(s) or clean-up(s) still running after %.0f s: left to the "
                      "next start", len(late), self.stop_wait)  # fmt: skip
            if self.on_abandon is not None:
                self.on_abandon()

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

        hooks = Hooks(on_progress=on_progress, on_snapshot=on_snapshot, on_phase=on_phase,
                      on_mode=on_mode)  # fmt: skip
        reporting = asyncio.create_task(self.reporter.follow(job))
        try:
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
            job.status = "completed"
        except asyncio.CancelledError:
            job.status, job.error = "cancelled", job.stop_reason
        except SendenseError as exc:
            job.status, job.error = "failed", str(exc)
        except Exception as exc:
            log.exception("backup %s crashed", job.job_id)
            job.status, job.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
        finally:
            job.finished_at, job.phase = time.time(), None
            self._active_vm.pop(job.moref, None)
            reporting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporting
            log.info("backup %s of %s %s %s", job.job_id, job.vm, job.status, job.error or "")
            self._close(job)

    def _close(self, job: Job) -> None:
        # The report first: a crash before the record is rewritten still finds it (restore).
        record = job.as_dict()
        self.outbox.submit(job.job_id, record, job.hub_report())
        self._save(record)

    def _save(self, record: dict) -> None:
        try:
            self.spool.save_job(record)
        except SpoolError as exc:
            log.error("job %s: %s", record.get("job_id"), exc)
