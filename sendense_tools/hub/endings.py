"""How a job ends: torn down (failed, cancelled), finished (the node's final report),
or finished again after a hub restart. Each frees everything the job held and
records the outcome; only a completed job keeps its images. `Release` is the part
restores share.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from abc import ABC, abstractmethod
from typing import Any

from sendense_tools.hub.allocator import SlotAllocator
from sendense_tools.hub.exports import ExportError
from sendense_tools.hub.job import Job
from sendense_tools.hub.points import PointChecker
from sendense_tools.hub.repository import Repository
from sendense_tools.hub.store import Store

log = logging.getLogger(__name__)


class Release(ABC):
    """What every end of a job does, backup or restore: tell the node (when it had
    started), stop every export, free every slot and the PSK directory, record it."""

    def __init__(self, store: Store, allocator: SlotAllocator, jobs: dict[str, Job]) -> None:
        self.store = store
        self.allocator = allocator
        # The manager's table of running jobs: a released job leaves it.
        self._jobs = jobs

    @abstractmethod
    def conclude(self, job_id: str, status: str, reason: str | None = None) -> None:
        """Record how the job ended."""

    async def teardown(self, job: Job, status: str, reason: str) -> None:
        try:
            if job.node_started:
                await job.client.cancel(job.id, job.kind)
            await self.stop_exports(job)
        finally:
            self.release(job)
            self.conclude(job.id, status, reason)

    async def stop_exports(self, job: Job) -> None:
        results = await asyncio.gather(
            *(e.stop() for e in job.exports.values()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                log.error("%s %s: stopping an export failed: %r", job.kind, job.id, result)

    def release(self, job: Job) -> None:
        if job.watcher is not None and job.watcher is not asyncio.current_task():
            job.watcher.cancel()
        self.allocator.release_job(job.id)
        self.store.release_allocations(job.id)
        if job.key_dir is not None:
            shutil.rmtree(job.key_dir, ignore_errors=True)
        self._jobs.pop(job.id, None)


class Endings(Release):
    def __init__(
        self,
        store: Store,
        allocator: SlotAllocator,
        repository: Repository,
        points: PointChecker,
        jobs: dict[str, Job],
    ) -> None:
        super().__init__(store, allocator, jobs)
        self.repository = repository
        self.points = points

    def conclude(self, job_id: str, status: str, reason: str | None = None) -> None:
        """Record how a job ended; a failed or cancelled job's images are removed."""
        self.store.set_status(job_id, status, reason)
        if status != "completed":
            row = self.store.job_row(job_id)
            assert row is not None
            self.repository.remove_job(row["vm"], job_id)

    async def finish(self, job: Job, report: dict[str, Any]) -> None:
        """Flush, stop, free, then check the point against the node's report."""
        failed = report["status"] == "failed"
        node_reason = f"node: {report.get('error') or 'node reported failure'}"
        try:
            try:
                flush_errors = await self._flush_all(job)
            finally:
                await asyncio.shield(self.stop_exports(job))
                self.release(job)
            if failed:
                self.conclude(job.id, "failed", node_reason)
            elif flush_errors:
                self.conclude(job.id, "failed", "; ".join(flush_errors))
            else:
                await self._verify_and_conclude(job.id)
        except asyncio.CancelledError:
            # The hub is stopping: a finalizing job stays so, for the next start.
            if failed:
                self.conclude(job.id, "failed", node_reason)
            raise
        except Exception as exc:
            self.conclude(job.id, "failed", f"finalizing failed: {exc!r}")

    async def resume(self, job_id: str) -> None:
        """A job the last run was finalizing: its exports are stopped, verify it again."""
        log.warning("backup %s: verifying again after a hub restart", job_id)
        try:
            await self._verify_and_conclude(job_id)
        except Exception as exc:
            self.conclude(job_id, "failed", f"finalizing failed: {exc!r}")

    async def _verify_and_conclude(self, job_id: str) -> None:
        mismatches = await self.points.check(job_id)
        if mismatches:
            self.conclude(job_id, "failed", "; ".join(mismatches))
        else:
            self.conclude(job_id, "completed")

    async def _flush_all(self, job: Job) -> list[str]:
        results = await asyncio.gather(
            *(e.flush(job.tls_username, job.psk_file) for e in job.exports.values()),
            return_exceptions=True,
        )
        return [
            str(r) if isinstance(r, ExportError) else f"{d}: {r!r}"
            for d, r in zip(job.exports, results, strict=True)
            if isinstance(r, BaseException)
        ]
