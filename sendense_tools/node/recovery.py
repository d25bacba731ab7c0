"""At start: finish what the previous run left, in the background while the API serves.

- final reports still spooled are sent again (node/outbox.py);
- jobs the node crashed in (records still `running`) get their snapshot removed,
  only `sendense-<job id>` with this node's owner mark, never another
  appliance's, and are reported `failed` to the hub through the spool.

vCenter may be down as the node starts: the clean-up is retried with backoff
until it succeeds; meanwhile GET /api/v1/backup/{id} already answers `failed`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from pyVmomi import vmodl

from sendense_tools.backup.blocking import run_blocking
from sendense_tools.errors import SendenseError
from sendense_tools.node.job import Job
from sendense_tools.node.jobbook import BookJob, JobBook
from sendense_tools.node.jobs import JobManager
from sendense_tools.vsphere.connection import VsphereSession
from sendense_tools.vsphere.inventory import VmNotFound, find_vm
from sendense_tools.vsphere.snapshots import remove_job_snapshot, snapshot_name

log = logging.getLogger("sendense.node")
# What a clean-up retries on: vCenter or the network not there (yet).
RETRIED: tuple[type[BaseException], ...] = (SendenseError, OSError, vmodl.MethodFault)
B = TypeVar("B", bound=JobBook[Any, Any])
J = TypeVar("J", bound=BookJob)


def start_recovery(jobs: JobManager, retry_initial: float, retry_max: float) -> list[str]:
    """Begin the start-up recovery; returns the ids of the crashed jobs it cleans up."""
    return recover_book(jobs, _remove_snapshot, retry_initial, retry_max, RETRIED, "final")


def recover_book(
    book: B,
    clean_up: Callable[[B, J], str],
    retry_initial: float,
    retry_max: float,
    retried: tuple[type[BaseException], ...],
    reports: str,
) -> list[str]:
    """Resend the book's spooled reports (`reports` names them in the log) and clean up,
    in background tasks, after each job the previous run crashed in; returns their ids."""
    resent = book.outbox.resume()
    if resent:
        log.info("sending %d spooled %s report(s): %s", len(resent), reports, ", ".join(resent))
    crashed = book.restore()
    for job in crashed:
        task = asyncio.create_task(
            _recover(book, job, clean_up, retry_initial, retry_max, retried),
            name=f"recover-{job.job_id}",
        )
        book.background.append(task)
    return [j.job_id for j in crashed]


def _remove_snapshot(jobs: JobManager, job: Job) -> str:
    session = VsphereSession.connect(jobs.vcenter())
    try:
        try:
            vm = find_vm(session, job.moref)
        except VmNotFound:
            return f"VM {job.vm} ({job.moref}) no longer exists"
        removed = remove_job_snapshot(
            session, vm, job.job_id, jobs.options.owner, jobs.options.snapshot_remove_timeout
        )
    finally:
        session.close()
    name = snapshot_name(job.job_id)
    return f"snapshot {name} removed" if removed else f"it left no snapshot {name}"


async def _recover(
    book: B,
    job: J,
    clean_up: Callable[[B, J], str],
    retry_initial: float,
    retry_max: float,
    retried: tuple[type[BaseException], ...],
) -> None:
    delay = retry_initial
    while True:
        try:
            # A clean-up under way when the node stops is let finish (shutdown bounds it).
            what = await run_blocking(clean_up, book, job)
            break
        except retried as exc:
            log.warning("%s %s: cannot clean up yet (retry in %.0f s): %s",
                        book.kind, job.job_id, delay, exc)  # fmt: skip
        await asyncio.sleep(delay)
        delay = min(delay * 2, retry_max)
    book.finish_recovered(job, what)
