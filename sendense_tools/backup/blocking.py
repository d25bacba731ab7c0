"""Blocking vSphere calls from asyncio that run to their end even when the task is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


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
