"""What backups and restores share while they run: their tasks, their exports' start,
the guarded start that tears down whatever it began, and every end asked from outside.

While a job is still starting, an end asked for from outside (cancel, export crash,
node removed) cancels the starting task instead, so that nothing it was starting
outlives the job; once started, the end is the manager's `endings.teardown`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sendense_tools.hub.endings import Release
from sendense_tools.hub.errors import HubError, NodeRefused, StartAborted
from sendense_tools.hub.exports import Export, ExportError, start_export
from sendense_tools.hub.images import ImageError, StorageError
from sendense_tools.hub.job import Job
from sendense_tools.hub.options import ExportOptions
from sendense_tools.hub.sockets import ExportLayout
from sendense_tools.hub.store import Store

log = logging.getLogger(__name__)


class Lifecycle:
    store: Store
    layout: ExportLayout
    endings: Release

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()
        # Start and finish tasks may be cancelled at shutdown; teardown tasks run to the end.
        self._interruptible: set[asyncio.Task] = set()

    def _spawn(self, coro: Any, interruptible: bool = False) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if interruptible:
            self._interruptible.add(task)
            task.add_done_callback(self._interruptible.discard)
        return task

    async def _start_exports(
        self, job: Job, specs: list[dict[str, Any]], options: ExportOptions
    ) -> None:
        """One qemu-nbd per disk spec on its slot, recorded, and answering NBD."""
        for s in specs:
            export = await start_export(
                s["disk_id"],
                self.layout.address(job.node, s["nbd_port"]),
                s["export_name"],
                Path(s["qcow2_path"]),
                options,
                self._on_export_exit(job),
                tls_dir=job.key_dir,
            )
            job.exports[s["disk_id"]] = export
            self.store.set_pid(job.node, s["nbd_port"], export.pid)
        await asyncio.gather(*(e.wait_ready() for e in job.exports.values()))

    async def _guarded_start(self, job: Job, steps: Callable[[], Awaitable[None]]) -> bool:
        """Run a job's start `steps` (ending with the node call); on any failure tear down
        all they started and raise. False when the job already ended meanwhile."""
        try:
            await steps()
        except NodeRefused as exc:
            job.node_started = False
            await self._fail_start(job, "failed", str(exc))
            raise
        except (ExportError, ImageError, StorageError, HubError) as exc:
            await self._fail_start(job, "failed", str(exc))
            raise
        except asyncio.CancelledError as exc:
            if job.ending is None:
                await self._fail_start(job, "failed", f"start interrupted: {exc!r}")
                raise
            # Our own cancel (see `_end`): the job ends, the caller hears why.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            status, reason = job.ending
            await self._fail_start(job, status, reason)
            if status == "cancelled":
                raise StartAborted(f"{job.kind} {job.id} ended while starting: {reason}") from None
            raise ExportError(reason) from None
        except BaseException as exc:
            await self._fail_start(job, "failed", f"start interrupted: {exc!r}")
            raise
        job.starter = None
        # Closing already: the node's final report came during the start call.
        return not job.closing

    async def _fail_start(self, job: Job, status: str, reason: str) -> None:
        job.starter = None
        job.closing = True
        await asyncio.shield(self.endings.teardown(job, status, reason))

    def _on_export_exit(self, job: Job):
        def on_exit(export: Export) -> None:
            if job.closing:
                return
            reason = export.exit_reason()
            log.error("%s %s: %s", job.kind, job.id, reason)
            self._end(job, "failed", reason)

        return on_exit

    def _end(self, job: Job, status: str, reason: str) -> asyncio.Task | None:
        """End a job from outside its own flow; the task to wait on, None if it is ending."""
        if job.closing:
            return None
        if job.starter is not None:
            if job.ending is None:
                job.ending = (status, reason)
                job.starter.cancel()
            return job.starter
        job.closing = True
        return self._spawn(self.endings.teardown(job, status, reason))
