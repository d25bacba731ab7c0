"""Backups a stopped or crashed hub left in flight: the node may have finished its copy since.

Failing every such job at the next start threw away good copies: a node that had written its
last block when the hub went down only had its snapshot to remove and its final report to hand
over. So the next start asks the node first. A completed job's final report is taken (from the
node's answer, or from its own PUT if that comes first) and verified from the stored images, as
a job the hub was finalizing is; anything else, or no answer, fails the job as before and tells
the node to stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from pydantic import ValidationError

from sendense_tools.hub.endings import Endings
from sendense_tools.hub.errors import HubError
from sendense_tools.hub.nodeclient import NodeClient
from sendense_tools.hub.schemas import ProgressReport, reported_mode
from sendense_tools.hub.store import FINALIZING, STOPPED, Store

log = logging.getLogger(__name__)
# A node past its copy (removing its snapshot) is asked again for this long.
SETTLE_FOR = 30.0
ASK_EVERY = 1.0
COPY_DONE = ("removing_snapshot",)

Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task]


class Settler:
    def __init__(self, store: Store, endings: Endings, spawn: Spawn) -> None:
        self.store = store
        self.endings = endings
        self.spawn = spawn
        self._pending: dict[str, str] = {}

    def after_restart(self, job_ids: list[str], clients: dict[str, NodeClient]) -> list[str]:
        """Every job the last run left active: verified again if it was being finalized,
        settled with its node if the node was copying, failed otherwise. The failed ids."""
        failed = []
        for job_id in job_ids:
            row = self.store.job_row(job_id)
            assert row is not None
            if row["phase"] == FINALIZING:
                self.spawn(self.endings.resume(job_id))
                continue
            reason = "hub stopped" if row["phase"] == STOPPED else "hub restarted"
            client = clients.get(row["node"])
            if client is not None and row["status"] == "running":
                self.start(job_id, client, reason)
                continue
            self.endings.conclude(job_id, "failed", reason)
            failed.append(job_id)
            if client is not None:
                # The node may have been told to start just before the crash.
                self.spawn(client.cancel(job_id))
        return failed

    def start(self, job_id: str, client: NodeClient, reason: str) -> None:
        """Settle the job with its node in the background; `reason` if it did not complete."""
        self._pending[job_id] = reason
        self.spawn(self._settle(job_id, client, reason))

    def take_final(self, job_id: str, report: dict[str, Any]) -> bool:
        """The node's own final report for a job being settled: taken when it completed."""
        if job_id not in self._pending or report["status"] != "completed":
            return False
        self._take(job_id, report)
        return True

    def _take(self, job_id: str, report: dict[str, Any]) -> None:
        del self._pending[job_id]
        self.store.record_progress(
            job_id, report.get("snapshot"), report["disks"], FINALIZING, reported_mode(report),
            report.get("hardware"),
        )  # fmt: skip
        log.warning("backup %s: the node completed it while the hub was down", job_id)
        self.spawn(self.endings.resume(job_id))

    async def _settle(self, job_id: str, client: NodeClient, reason: str) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + SETTLE_FOR
        state: dict[str, Any] | None = None
        while job_id in self._pending:
            try:
                state = await client.job(job_id)
            except HubError as exc:
                log.info("backup %s: node cannot settle it: %s", job_id, exc)
                state = None
            if state is None or state.get("phase") not in COPY_DONE or loop.time() > until:
                break
            await asyncio.sleep(ASK_EVERY)
        if job_id not in self._pending:
            return  # its own final report came first
        report = _final_report(state)
        if report is not None:
            self._take(job_id, report)
            return
        del self._pending[job_id]
        self.endings.conclude(job_id, "failed", reason)
        await client.cancel(job_id)


def _final_report(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """A node's GET answer as the final report it would PUT, when the job completed."""
    if state is None or state.get("status") != "completed":
        return None
    try:
        fields = {k: state.get(k) for k in ProgressReport.model_fields if k in state}
        return ProgressReport.model_validate(fields).model_dump()
    except ValidationError as exc:
        log.warning("node's record of a completed backup is not a report: %s", exc)
        return None
