"""Progress and the final result of a backup, sent to the hub."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sendense_tools.api.client import ApiCallError, ApiClient
from sendense_tools.errors import SendenseError

if TYPE_CHECKING:
    from sendense_tools.node.jobs import Job

log = logging.getLogger("sendense.node")


class HubReporter:
    """PUT /api/v1/backups/{id}/progress: running updates at most every `interval` s,
    and the final report retried so that a short tunnel outage does not lose it."""

    def __init__(
        self,
        hub_url: str,
        token: str,
        interval: float = 1.0,
        final_attempts: int = 8,
        final_backoff: float = 1.0,
    ) -> None:
        self.hub_url = hub_url
        self.token = token
        self.interval = interval
        self.final_attempts = final_attempts
        self.final_backoff = final_backoff

    async def _put(self, job: Job) -> None:
        async with ApiClient(self.hub_url, self.token, timeout=30) as api:
            await api.put(f"/api/v1/backups/{job.job_id}/progress", job.hub_report())

    async def follow(self, job: Job) -> None:
        """Report running progress while the job runs (cancelled when it ends)."""
        while True:
            await job.changed.wait()
            job.changed.clear()
            try:
                await self._put(job)
            except SendenseError as exc:
                log.warning("progress report for %s failed: %s", job.job_id, exc)
            await asyncio.sleep(self.interval)

    async def final(self, job: Job) -> bool:
        delay = self.final_backoff
        for attempt in range(1, self.final_attempts + 1):
            try:
                await self._put(job)
                return True
            except ApiCallError as exc:
                if 400 <= exc.status < 500:
                    # The hub refused this report; sending it again cannot help.
                    log.warning("hub refused the final report for %s: %s", job.job_id, exc)
                    return False
                log.warning("final report for %s failed (attempt %d): %s", job.job_id, attempt, exc)
            except SendenseError as exc:
                log.warning("final report for %s failed (attempt %d): %s", job.job_id, attempt, exc)
            if attempt < self.final_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        return False
