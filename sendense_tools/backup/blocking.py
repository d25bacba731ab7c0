"""Blocking vSphere calls from asyncio that run to their end even when the task is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from sendense_tools.vsphere.connection import VsphereSession

T = TypeVar("T")
D = TypeVar("D")
# vCenter drops an idle session after 30 minutes; touching it more often keeps
# the cookie of a long datastore transfer valid to its end.
KEEPALIVE_SECONDS = 300.0


async def finish_blocking(fn: Callable[..., T], *args: Any) -> tuple[T, bool]:
    """Run a blocking vSphere step to its end even if this task is cancelled meanwhile.

    Returns (result, cancelled): a CreateSnapshot whose task got cancelled
    while it ran still hands back the snapshot, so the caller can remove it
    before passing the cancellation on.
    """
    fut = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    cancelled = False
    while True:
        try:
            return await asyncio.shield(fut), cancelled
        except asyncio.CancelledError:
            if fut.done():
                raise
            cancelled = True


async def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """finish_blocking, then deliver a cancellation that arrived meanwhile."""
    result, cancelled = await finish_blocking(fn, *args)
    if cancelled:
        raise asyncio.CancelledError
    return result


async def run_stoppable(fn: Callable[..., T], stop: threading.Event, *args: Any) -> T:
    """Run a blocking call that watches `stop`; cancelled, set `stop` and wait for it to end.

    For long transfers (a datastore upload) that can be interrupted, unlike a
    vSphere task: the cancellation is passed on once the call returned.
    """
    fut = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(BaseException):
            await fut
        raise


async def keep_alive(session: VsphereSession) -> None:
    """Touch the session every KEEPALIVE_SECONDS until cancelled."""
    while True:
        await asyncio.sleep(KEEPALIVE_SECONDS)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(session.keepalive)


def first_error(exc: BaseException) -> BaseException:
    """The first error inside (nested) exception groups: a TaskGroup's real reason."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def each_disk(disks: Iterable[D], one: Callable[[D], Coroutine[Any, Any, None]]) -> None:
    """one(disk) for every disk at once; the first failure (the others cancelled) is raised."""
    try:
        async with asyncio.TaskGroup() as tg:
            for disk in disks:
                tg.create_task(one(disk))
    except BaseExceptionGroup as group:
        raise first_error(group) from None


def naming_disk(disk_id: str, exc: BaseException) -> str:
    """The error's text, led by the disk's id unless it names the disk already."""
    text = str(exc)
    return text if disk_id in text else f"{disk_id}: {text}"
