"""Reports to the hub: running progress with a heartbeat, and single attempts at a final one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from enum import Enum
from typing import TYPE_CHECKING, Any

from sendense_tools.api.client import ApiCallError, ApiClient
from sendense_tools.errors import SendenseError

if TYPE_CHECKING:
    from sendense_tools.node.jobbook import BookJob as Job

log = logging.getLogger("sendense.node")
# 4xx answers that mean "not now" rather than "never".
RETRYABLE_4XX = (408, 429)
# Answers to a running report that mean the hub no longer runs the job.
HUB_ENDED = (404, 409)


class Delivery(Enum):
    TAKEN = "taken"
    REFUSED = "refused"
    RETRY = "retry"


BACKUP_REPORTS = "/api/v1/backups/{job_id}/progress"
RESTORE_REPORTS = "/api/v1/restores/{job_id}/progress"


class HubReporter:
    """PUT <path> (BACKUP_REPORTS, RESTORE_REPORTS) with a job's reports.

    While a job runs: a report when something changed, at most every `interval`
    seconds, and at least every `heartbeat` seconds even when nothing did (vCenter
    may spend minutes creating or removing a snapshot), so that the hub can tell
    a slow job from a dead one.
    """

    def __init__(
        self,
        hub_url: str,
        token: str,
        interval: float = 1.0,
        heartbeat: float = 30.0,
        path: str = BACKUP_REPORTS,
        kind: str = "backup",
    ) -> None:
        self.hub_url = hub_url
        self.token = token
        self.interval = interval
        self.heartbeat = heartbeat
        self.path = path
        self.kind = kind

    def for_restores(self) -> HubReporter:
        """The same hub, token and pace, for restore reports."""
        return HubReporter(self.hub_url, self.token, self.interval, self.heartbeat,
                           RESTORE_REPORTS, "restore")  # fmt: skip

    async def _put(self, job_id: str, report: dict[str, Any]) -> None:
        async with ApiClient(self.hub_url, self.token, timeout=30) as api:
            await api.put(self.path.format(job_id=job_id), report)

    async def follow(self, job: Job) -> None:
        """Report running progress while the job runs (cancelled when it ends)."""
        loop = asyncio.get_running_loop()
        sent: float | None = None
        due = loop.time() + self.heartbeat
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(due):
                    await job.changed.wait()
            if sent is not None and (pause := sent + self.interval - loop.time()) > 0:
                await asyncio.sleep(pause)
            job.changed.clear()
            sent = loop.time()
            due = sent + self.heartbeat
            try:
                await self._put(job.job_id, job.hub_report())
            except ApiCallError as exc:
                if exc.status in HUB_ENDED:
                    # The hub failed or lost this job (its restart, a stall, a cancel
                    # the node never heard): copying on would only hold the snapshot.
                    log.warning("hub ended %s %s: %s; stopping it", self.kind, job.job_id, exc)
                    job.stop(f"the hub ended this {self.kind}: {exc.message}")
                    return
                log.warning("progress report for %s failed: %s", job.job_id, exc)
            except SendenseError as exc:
                log.warning("progress report for %s failed: %s", job.job_id, exc)

    async def send_final(self, job_id: str, report: dict[str, Any]) -> Delivery:
        """One attempt at handing the hub a final report."""
        try:
            await self._put(job_id, report)
            return Delivery.TAKEN
        except ApiCallError as exc:
            if exc.status == 409:
                # The hub already ended this job (its own stall check, a cancel): nothing to add.
                log.info("hub already finished %s; final report not needed: %s", job_id, exc)
                return Delivery.TAKEN
            if 400 <= exc.status < 500 and exc.status not in RETRYABLE_4XX:
                log.warning("hub refused the final report for %s: %s", job_id, exc)
                return Delivery.REFUSED
            log.warning("final report for %s not taken yet: %s", job_id, exc)
        except SendenseError as exc:
            log.warning("final report for %s not delivered yet: %s", job_id, exc)
        return Delivery.RETRY
