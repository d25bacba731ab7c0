"""A job the node stopped reporting on: what the node's own answer says to do with it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from sendense_tools.hub.errors import JobUnknownToNode, NodeError, NodeUnreachable
from sendense_tools.hub.job import Job
from sendense_tools.hub.schemas import ProgressReport


@dataclass(frozen=True)
class Verdict:
    """Exactly one of: keep waiting (neither set), fail with `reason`, finalize `report`."""

    reason: str | None = None
    report: dict[str, Any] | None = None


KEEP_WAITING = Verdict()
log = logging.getLogger(__name__)


async def watch(
    job: Job,
    stall_timeout: float,
    take_final: Callable[[Job, dict[str, Any]], None],
    fail: Callable[[Job, str, str], object],
    verdict_of: Callable[[Job, dict[str, Any]], Verdict] | None = None,
) -> None:
    """Ask the node about a job that has not reported for `stall_timeout` seconds."""
    while not job.closing:
        job.reported.clear()
        try:
            await asyncio.wait_for(job.reported.wait(), stall_timeout)
            continue
        except TimeoutError:
            pass
        verdict = await ask_node(job, verdict_of)
        if job.closing:
            return
        if verdict.report is not None:
            log.warning("%s %s: final report taken from node %s", job.kind, job.id, job.node)
            take_final(job, verdict.report)
        elif verdict.reason is not None:
            log.error("%s %s: %s", job.kind, job.id, verdict.reason)
            fail(job, "failed", verdict.reason)


async def ask_node(
    job: Job, verdict_of: Callable[[Job, dict[str, Any]], Verdict] | None = None
) -> Verdict:
    silent = job.silent_for()
    try:
        answer = await job.client.job(job.id, job.kind)
    except JobUnknownToNode as exc:
        return Verdict(reason=str(exc))
    except (NodeUnreachable, NodeError) as exc:
        return Verdict(reason=f"no progress report for {silent:.0f} s and {exc}")
    return (verdict_of or judge)(job, answer)


def ended(job: Job, answer: dict[str, Any]) -> Verdict | None:
    """The verdict on a job the node does not report completed; None when it does."""
    status = answer["status"]
    if status == "running":
        return KEEP_WAITING
    if status != "completed":
        why = answer.get("error") or status
        return Verdict(reason=f"node {job.node}: {why}")
    return None


def judge(job: Job, answer: dict[str, Any]) -> Verdict:
    """The node's `GET /api/v1/backup/{id}` answer as a verdict on the hub's job."""
    verdict = ended(job, answer)
    if verdict is not None:
        return verdict
    # The final report that never arrived, rebuilt from the node's record of it.
    try:
        report = ProgressReport.model_validate(
            {
                "status": "completed",
                "snapshot": answer.get("snapshot"),
                "hardware": answer.get("hardware"),
                "mode": answer.get("mode"),
                "mode_reason": answer.get("mode_reason"),
                "disks": answer.get("disks") or [],
            }
        ).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return Verdict(
            reason=f"node {job.node} reported an unusable result: {where}: {first['msg']}"
        )
    unknown = sorted({d["disk_id"] for d in report["disks"]} - set(job.exports))
    if unknown:
        return Verdict(reason=f"node {job.node} reports unknown disks {', '.join(unknown)}")
    # A full has its whole-disk checksum (or the older sha256), an incremental its changes.
    reported = {
        d["disk_id"] for d in report["disks"] if d["sha256"] or d["checksum"] or d["changes"]
    }
    missing = sorted(set(job.exports) - reported)
    if missing:
        return Verdict(
            reason=f"node {job.node} reports backup {job.id} completed, "
            f"without the checksum of {', '.join(missing)}"
        )
    return Verdict(report=report)
