"""Final reports that survive tunnel outages and restarts: spooled, then sent until taken.

A report is written to the spool before the first attempt and removed only
when the hub took it (2xx, or 409 for a job the hub already ended) or refused it
for good (another 4xx); until then it is retried with a capped exponential
backoff, and a restarted node sends whatever is still spooled.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sendense_tools.node.errors import SpoolError
from sendense_tools.node.reporter import Delivery, HubReporter
from sendense_tools.node.spool import Spool

log = logging.getLogger("sendense.node")


class ReportOutbox:
    def __init__(
        self,
        spool: Spool,
        reporter: HubReporter,
        retry_initial: float = 5.0,
        retry_max: float = 60.0,
    ) -> None:
        self.spool = spool
        self.reporter = reporter
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._sending: dict[str, asyncio.Task[None]] = {}

    def submit(self, job_id: str, record: dict[str, Any], report: dict[str, Any]) -> None:
        """Spool `report` (with the job's final `record`), then send it in the background."""
        try:
            self.spool.save_report(job_id, record, report)
        except SpoolError as exc:
            # Still worth sending: only a node crash before the hub takes it loses it now.
            log.error("final report for %s is not spooled: %s", job_id, exc)
        self._send(job_id, report)

    def resume(self) -> list[str]:
        """Send every report a previous run left in the spool; returns their job ids."""
        spooled = self.spool.reports()
        for job_id, entry in spooled.items():
            self._send(job_id, entry["report"])
        return sorted(spooled)

    def pending(self) -> list[str]:
        return sorted(self._sending)

    async def drain(self, grace: float) -> None:
        """Give pending deliveries `grace` seconds, then stop; what is left stays spooled."""
        tasks = list(self._sending.values())
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        if late:
            log.warning("%d final report(s) stay spooled for the next start", len(late))

    def _send(self, job_id: str, report: dict[str, Any]) -> None:
        previous = self._sending.get(job_id)
        if previous is not None:
            previous.cancel()  # a newer report of the same job replaces it
        task = asyncio.create_task(self._deliver(job_id, report), name=f"report-{job_id}")
        self._sending[job_id] = task
        task.add_done_callback(lambda t: self._forget(job_id, t))

    def _forget(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self._sending.get(job_id) is task:
            del self._sending[job_id]

    async def _deliver(self, job_id: str, report: dict[str, Any]) -> None:
        delay = self.retry_initial
        while (outcome := await self.reporter.send_final(job_id, report)) is Delivery.RETRY:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max)
        if outcome is Delivery.TAKEN:
            log.info("final report for %s delivered", job_id)
        self.spool.drop_report(job_id)
