"""The book of one kind of job on this node (backups, restores): what both managers share.

Every job is recorded in the spool when it starts and when it ends, so that a
restarted node still answers for the jobs of its previous run and can clean up
after the ones it crashed in (node/recovery.py). A stop cancels the running
jobs and waits (bounded) for their clean-up; final reports go through the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from sendense_tools.errors import SendenseError
from sendense_tools.node.errors import JobExists, JobNotFound, SpoolError
from sendense_tools.node.outbox import ReportOutbox
from sendense_tools.node.reporter import HubReporter
from sendense_tools.node.stopping import BACKUPS_WAIT_DEFAULT, REPORT_GRACE
from sendense_tools.vsphere.connection import VcenterParams

log = logging.getLogger("sendense.node")
# Finished jobs kept for GET; the hub keeps the history.
KEEP_FINISHED = 200


class BookJob(Protocol):
    job_id: str
    status: str
    phase: str | None
    error: str | None
    finished_at: float | None
    cancel: asyncio.Event
    changed: asyncio.Event
    task: asyncio.Task | None
    stop_reason: str

    def stop(self, reason: str = ...) -> None: ...
    def hub_report(self) -> dict[str, Any]: ...
    def as_record(self) -> dict[str, Any]: ...


J = TypeVar("J", bound=BookJob)
Opts = TypeVar("Opts")  # the executor's options


class JobBook(Generic[J, Opts]):
    kind = "job"  # in messages: "backup", "restore"
    crashed = "node restarted"
    from_record: Callable[[dict[str, Any]], J]  # a job from its spool record

    def __init__(
        self,
        vcenter: Callable[[], VcenterParams],
        options: Opts,
        reporter: HubReporter,
        outbox: ReportOutbox,
        stop_wait: float = BACKUPS_WAIT_DEFAULT,
        on_abandon: Callable[[], None] | None = None,
    ) -> None:
        # A callable so a rotated password file is read at each job.
        self.vcenter = vcenter
        self.options = options
        self.reporter = reporter
        self.outbox = outbox
        self.spool = outbox.spool
        # How long a stop waits for cancelled jobs (node/stopping.py), and what
        # it does with those that did not end in time.
        self.stop_wait = stop_wait
        self.on_abandon = on_abandon
        self.jobs: dict[str, J] = {}
        self.background: list[asyncio.Task] = []
        # One running job per VM (backups: moref; restores: the new VM's name) -> its id.
        self._active: dict[str, str] = {}

    def _refuse_existing(self, job_id: str) -> None:
        if job_id in self.jobs:
            raise JobExists(f"job {job_id} already exists on this node")

    def _register(self, job: J) -> None:
        # Recorded before anything exists in vCenter: a crash from here on is found at start.
        self.spool.save_job(job.as_record())
        self._forget_old()
        self.jobs[job.job_id] = job

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.finished_at is not None]
        for job in sorted(finished, key=lambda j: j.finished_at or 0)[: -KEEP_FINISHED or None]:
            del self.jobs[job.job_id]
            self.spool.forget_job(job.job_id)

    def get(self, job_id: str) -> J:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"{self.kind} job {job_id} does not exist on this node")
        return job

    def cancel(self, job_id: str) -> J:
        job = self.get(job_id)
        job.stop()
        return job

    def running(self) -> int:
        return sum(1 for j in self.jobs.values() if j.status == "running")

    # -- a previous run's jobs ---------------------------------------------------

    def restore(self) -> list[J]:
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
                job = self.from_record(record)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                log.error("spool: ignoring the malformed record of %r: %r", record, exc)
                continue
            if job.status == "running":
                job.status, job.phase, job.finished_at = "failed", None, time.time()
                job.error = self.crashed
                crashed.append(job)
            self.jobs[job.job_id] = job
        self._forget_old()
        return crashed

    def finish_recovered(self, job: J, what: str) -> None:
        """A crashed job cleaned up (`what` says how): the hub is told, the record closed."""
        job.error = f"{self.crashed}; {what}"
        log.warning("%s %s: %s", self.kind, job.job_id, job.error)
        self._close(job)

    # -- running -----------------------------------------------------------------

    async def _supervise(
        self, job: J, work: Callable[[], Awaitable[None]], active: str, what: str
    ) -> None:
        """Run a registered job's work, reporting as it goes; record how it ended.

        `active` is its key in `_active`, `what` names it in the log line ("of VM").
        """
        reporting = asyncio.create_task(self.reporter.follow(job))
        try:
            await work()
            job.status = "completed"
        except asyncio.CancelledError:
            job.status, job.error = "cancelled", job.stop_reason
        except SendenseError as exc:
            job.status, job.error = self._failure(job, exc)
        except Exception as exc:
            log.exception("%s %s crashed", self.kind, job.job_id)
            job.status, job.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
        finally:
            job.finished_at, job.phase = time.time(), None
            self._active.pop(active, None)
            reporting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporting
            log.info("%s %s %s %s %s", self.kind, job.job_id, what, job.status, job.error or "")
            self._close(job)

    def _failure(self, job: J, exc: SendenseError) -> tuple[str, str]:
        """The status and error of a job its work failed (a restore's says a stop caused it)."""
        return "failed", str(exc)

    # -- ending ------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Cancel every running job and clean-up; wait (bounded) for them to end.

        Each lets its vSphere call in flight end and cleans up. What is still
        running after `stop_wait` is left to the next start (its record still
        says running) and handed to `on_abandon`.
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
            log.error("%d %s(s) or clean-up(s) still running after %.0f s: left to the "
                      "next start", len(late), self.kind, self.stop_wait)  # fmt: skip
            if self.on_abandon is not None:
                self.on_abandon()

    def _close(self, job: J) -> None:
        # The report first: a crash before the record is rewritten still finds it (restore).
        record = job.as_record()
        self.outbox.submit(job.job_id, record, job.hub_report())
        self._save(record)

    def _save(self, record: dict) -> None:
        try:
            self.spool.save_job(record)
        except SpoolError as exc:
            log.error("job %s: %s", record.get("job_id"), exc)
