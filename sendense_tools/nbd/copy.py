"""Copy one disk from an NBD source to an NBD target with libnbd.

Layout: W worker threads (nbd/worker.py), each with one source handle and its share of the
target handles, runs its own poll loop with many requests in flight. A planner hands out
ranges in offset order from the source's base:allocation map (only within `areas` for an
incremental); zero ranges are skipped on a fresh target and written as zeroes on any other (an
overlay, whose backing file would show through a skipped range). Data is hashed in offset
order on a separate thread while it is written: SHA-256 and the block checksum of a full, the
changes digest of an areas copy (see nbd/blkhash.py). Any dropped connection stops the
attempt; the copy reconnects with backoff and resumes from the last flushed position, so a
target that was restarted (and lost unflushed writes) still ends up bit-identical
(nbd/disk_copy.py). The request buffers, the data waiting for the hasher included, are drawn
from a memory budget shared by every copy of the process (nbd/buffers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from sendense_tools.nbd.buffers import PROCESS_BUDGET, MemoryBudget
from sendense_tools.nbd.connect import Stopped
from sendense_tools.nbd.disk_copy import DiskCopy
from sendense_tools.nbd.endpoint import NbdEndpoint
from sendense_tools.nbd.results import CopyCancelled, CopyError, CopyProgress, CopyResult
from sendense_tools.nbd.worker import STALL_TIMEOUT

__all__ = [
    "STALL_TIMEOUT",
    "CopyCancelled",
    "CopyError",
    "CopyProgress",
    "CopyResult",
    "copy_disk",
]

PROGRESS_INTERVAL = 0.2


def _valid_areas(areas: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The areas as (offset, length) tuples; ValueError unless sorted and non-overlapping."""
    out: list[tuple[int, int]] = []
    end = 0
    for offset, length in areas:
        if offset < 0 or length < 0:
            raise ValueError(f"area ({offset}, {length}): negative offset or length")
        if offset < end:
            raise ValueError(f"area ({offset}, {length}) overlaps or precedes the one before")
        if length:
            out.append((int(offset), int(length)))
            end = offset + length
    return out


async def copy_disk(
    disk_id: str,
    source: NbdEndpoint,
    target: NbdEndpoint,
    *,
    connections: int = 2,
    on_progress: Callable[[CopyProgress], None] | None = None,
    cancel: asyncio.Event | None = None,
    retry_for: float = 300.0,
    target_is_zero: bool = True,
    areas: list[tuple[int, int]] | None = None,
    sha256: bool = True,
    budget: MemoryBudget | None = None,
) -> CopyResult:
    """Copy the guest content of `source` to `target` (all of it, or only `areas`: sorted,
    non-overlapping (offset, length) pairs); see the module docstring. `sha256=False` spares a
    full the serial SHA-256 of every byte, zeroes included (the block checksum stays): for
    when the records no longer carry it. The buffers come from `budget`, by default the
    process's ([backup] memory_budget)."""
    if connections < 1:
        raise ValueError(f"connections: {connections} (must be at least 1)")
    if areas is not None:
        areas = _valid_areas(areas)
    job = DiskCopy(
        disk_id,
        source,
        target,
        connections=connections,
        target_is_zero=target_is_zero,
        retry_for=retry_for,
        areas=areas,
        sha256=sha256,
        budget=budget or PROCESS_BUDGET,
    )
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[CopyResult] = loop.create_future()

    def run() -> None:
        try:
            result: CopyResult | BaseException = job.run()
        except BaseException as e:
            result = e
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(_settle, finished, result)

    thread = threading.Thread(target=run, name=f"nbd-copy-{disk_id}")
    thread.start()
    reporter = asyncio.create_task(_report(job, disk_id, on_progress)) if on_progress else None
    cancel_wait = asyncio.create_task(cancel.wait()) if cancel is not None else None
    try:
        waiting = {finished} | ({cancel_wait} if cancel_wait else set())
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not finished.done():
            job.cancel()
        result = await asyncio.shield(finished)
    except asyncio.CancelledError:
        job.cancel()
        with contextlib.suppress(BaseException):
            await finished
        raise
    except Stopped:
        raise CopyCancelled(f"{disk_id}: copy cancelled") from None
    finally:
        for task in (reporter, cancel_wait):
            if task is not None:
                task.cancel()
        if finished.done():  # settling the future is the thread's last act: this is a moment
            thread.join()
    if on_progress is not None:
        total = job.planner.total
        on_progress(CopyProgress(disk_id, total, total))
    return result


def _settle(future: asyncio.Future, result: CopyResult | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


async def _report(job: DiskCopy, disk_id: str, on_progress: Callable[[CopyProgress], None]) -> None:
    last = -1
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL)
        if job.planner is None:
            continue
        done = job.planner.counters.done
        if done != last:
            last = done
            on_progress(CopyProgress(disk_id, done, job.planner.total))
