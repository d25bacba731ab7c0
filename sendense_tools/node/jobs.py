"""Backups running on this node: one per VM at a time, each reporting to the hub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sendense_tools.api.server import ApiError
from sendense_tools.backup.executor import (
    BackupOptions,
    BackupOutcome,
    Hooks,
    backup_vm,
)
from sendense_tools.backup.targets import TargetMismatch, match_targets
from sendense_tools.errors import SendenseError
from sendense_tools.nbd.copy import CopyProgress
from sendense_tools.nbd.endpoint import NbdEndpoint
from sendense_tools.node.reporter import HubReporter
from sendense_tools.vsphere.connection import VcenterParams, VsphereSession
from sendense_tools.vsphere.inventory import VmInfo, VmNotFound, describe_vm

log = logging.getLogger("sendense.node")
# Finished jobs kept for GET /api/v1/backup/{job_id}; the hub keeps the history.
KEEP_FINISHED = 200


@dataclass
class DiskState:
    disk_id: str
    bytes_total: int
    bytes_copied: int = 0
    sha256: str | None = None


@dataclass
class Job:
    job_id: str
    vm: str
    moref: str
    disks: dict[str, DiskState]
    status: str = "running"  # running | completed | failed | cancelled
    snapshot: str | None = None
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def hub_report(self) -> dict[str, Any]:
        """The body of PUT /api/v1/backups/{id}/progress."""
        status = "failed" if self.status == "cancelled" else self.status
        return {
            "status": status,
            "snapshot": self.snapshot,
            "error": self.error,
            "disks": [
                {
                    "disk_id": d.disk_id,
                    "bytes_copied": d.bytes_copied,
                    "bytes_total": d.bytes_total,
                    "sha256": d.sha256,
                }
                for d in self.disks.values()
            ],
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "vm": self.vm,
            "moref": self.moref,
            "status": self.status,
            "snapshot": self.snapshot,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "disks": self.hub_report()["disks"],
        }


class JobManager:
    def __init__(
        self,
        vcenter: Callable[[], VcenterParams],
        options: BackupOptions,
        reporter: HubReporter,
    ) -> None:
        # A callable so a rotated password file is read at each backup.
        self._vcenter = vcenter
        self.options = options
        self.reporter = reporter
        self.jobs: dict[str, Job] = {}
        self._active_vm: dict[str, str] = {}  # moref -> job_id

    async def describe(self, vm: str) -> VmInfo:
        def run() -> VmInfo:
            session = VsphereSession.connect(self._vcenter())
            try:
                return describe_vm(session, vm)
            finally:
                session.close()

        try:
            return await asyncio.to_thread(run)
        except VmNotFound as exc:
            raise ApiError(404, "vm_not_found", str(exc)) from None
        except SendenseError as exc:
            raise ApiError(502, "vcenter_error", str(exc)) from None

    async def start(self, job_id: str, vm: str, targets: dict[str, NbdEndpoint]) -> Job:
        if job_id in self.jobs:
            raise ApiError(409, "job_exists", f"job {job_id} already exists on this node")
        info = await self.describe(vm)
        try:
            match_targets(info.disks, targets)
        except TargetMismatch as exc:
            raise ApiError(400, "bad_nbd_targets", str(exc)) from None
        # No await between this check and the registration below: one backup per VM.
        running = self._active_vm.get(info.moref)
        if running is not None:
            raise ApiError(
                409, "vm_busy", f"VM {info.name} is already being backed up (job {running})"
            )
        job = Job(
            job_id,
            info.name,
            info.moref,
            {d.disk_id: DiskState(d.disk_id, d.capacity) for d in info.disks},
        )
        self._forget_old()
        self.jobs[job_id] = job
        self._active_vm[info.moref] = job_id
        job.task = asyncio.create_task(self._run(job, targets), name=f"backup-{job_id}")
        return job

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.finished_at is not None]
        for job in sorted(finished, key=lambda j: j.finished_at or 0)[: -KEEP_FINISHED or None]:
            del self.jobs[job.job_id]

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, "job_not_found", f"job {job_id} does not exist on this node")
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.status == "running" and job.task is not None:
            job.cancel.set()
            job.task.cancel()
        return job

    async def shutdown(self) -> None:
        """Cancel every running backup and wait until its snapshot is gone and reported."""
        tasks = [j.task for j in self.jobs.values() if j.task is not None and not j.task.done()]
        for job in self.jobs.values():
            if job.status == "running" and job.task is not None:
                job.cancel.set()
                job.task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, job: Job, targets: dict[str, NbdEndpoint]) -> None:
        def on_progress(p: CopyProgress) -> None:
            d = job.disks.get(p.disk_id)
            if d is not None:
                d.bytes_copied, d.bytes_total = p.bytes_done, p.bytes_total
                job.changed.set()

        def on_snapshot(name: str) -> None:
            job.snapshot = name
            job.changed.set()

        hooks = Hooks(on_progress=on_progress, on_snapshot=on_snapshot)
        reporting = asyncio.create_task(self.reporter.follow(job))
        try:
            outcome: BackupOutcome = await backup_vm(
                self._vcenter(), job.moref, targets, job.job_id, self.options, hooks, job.cancel
            )
            for r in outcome.disks:
                d = job.disks[r.disk_id]
                d.bytes_copied, d.bytes_total, d.sha256 = r.capacity, r.capacity, r.sha256
            job.status = "completed"
        except asyncio.CancelledError:
            job.status, job.error = "cancelled", "cancelled"
        except SendenseError as exc:
            job.status, job.error = "failed", str(exc)
        except Exception as exc:
            log.exception("backup %s crashed", job.job_id)
            job.status, job.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
        finally:
            job.finished_at = time.time()
            self._active_vm.pop(job.moref, None)
            reporting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporting
            log.info("backup %s of %s %s %s", job.job_id, job.vm, job.status, job.error or "")
            await asyncio.shield(self.reporter.final(job))
