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

from pyVmomi import vmodl

from sendense_tools.backup.blocking import run_blocking
from sendense_tools.errors import SendenseError
from sendense_tools.node.job import Job
from sendense_tools.node.jobs import JobManager
from sendense_tools.vsphere.connection import VsphereSession
from sendense_tools.vsphere.inventory import VmNotFound, find_vm
from sendense_tools.vsphere.snapshots import remove_job_snapshot, snapshot_name

log = logging.getLogger("sendense.node")


def start_recovery(jobs: JobManager, retry_initial: float, retry_max: float) -> list[str]:
    """Begin the start-up recovery; returns the ids of the crashed jobs it cleans up."""
    resent = jobs.outbox.resume()
    if resent:
        log.info("sending %d spooled final report(s): %s", len(resent), ", ".join(resent))
    crashed = jobs.restore()
    for job in crashed:
        task = asyncio.create_task(
            _recover(jobs, job, retry_initial, retry_max), name=f"recover-{job.job_id}"
        )
        jobs.background.append(task)
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


async def _recover(jobs: JobManager, job: Job, retry_initial: float, retry_max: float) -> None:
    delay = retry_initial
    while True:
        try:
            # A removal under way when the node stops is let finish (shutdown bounds it).
            what = await run_blocking(_remove_snapshot, jobs, job)
            break
        except (SendenseError, OSError, vmodl.MethodFault) as exc:
            log.warning("backup %s: cannot clean up yet (retry in %.0f s): %s",
                        job.job_id, delay, exc)  # fmt: skip
        await asyncio.sleep(delay)
        delay = min(delay * 2, retry_max)
    jobs.finish_recovered(job, what)
