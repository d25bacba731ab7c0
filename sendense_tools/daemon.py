"""One run loop for the hub, node and tunnel daemons (systemd `Type=notify` units).

The runner owns what every daemon does the same way: SIGTERM/SIGINT stop it,
SIGHUP reloads it (or is logged and ignored), READY=1 once it is up,
RELOADING=1/READY=1 around a reload, STOPPING=1 before it stops, and the
watchdog pings. The pings come from a task on the event loop, so a loop that is
stuck (a blocking call, a busy coroutine) stops them and systemd restarts us.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
import time
from abc import ABC, abstractmethod
from typing import ClassVar

from sendense_tools import systemd
from sendense_tools.errors import SendenseError

log = logging.getLogger(__name__)


class Service(ABC):
    """What the runner drives: start, stop and, if `reloadable`, reload."""

    # Overridden to True by a service whose reload() re-reads its configuration.
    reloadable: ClassVar[bool] = False

    @abstractmethod
    async def start(self) -> str:
        """Bring the service up; returns the STATUS= text for systemd."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop everything the service started."""

    async def reload(self) -> str:
        """Re-read the configuration; returns the new STATUS= text."""
        raise NotImplementedError

    async def finished(self) -> None:
        """Returns (or raises) when the service ends without being asked to."""
        await asyncio.Event().wait()


class _Request(enum.Enum):
    STOP = "stop"
    RELOAD = "reload"


def _monotonic_usec() -> int:
    # systemd matches a RELOADING=1 to its reload request by this timestamp.
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


async def _watchdog(interval: float) -> None:
    while True:
        systemd.notify("WATCHDOG=1")
        await asyncio.sleep(interval)


async def run(service: Service, name: str) -> None:
    """Run `service` until SIGTERM/SIGINT, or until it ends by itself (its error re-raised).

    stop() follows every start(), even one that failed or was cut short by a
    stop: a service cleans up whatever part of it came up.
    """
    loop = asyncio.get_running_loop()
    requests: asyncio.Queue[_Request] = asyncio.Queue()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, requests.put_nowait, _Request.STOP)
    loop.add_signal_handler(signal.SIGHUP, requests.put_nowait, _Request.RELOAD)
    interval = systemd.watchdog_interval()
    pinger = asyncio.create_task(_watchdog(interval)) if interval else None
    try:
        await _serve(service, name, requests)
    finally:
        systemd.notify("STOPPING=1", f"STATUS={name} stopping")
        log.info("%s stopping", name)
        try:
            await service.stop()
        finally:
            if pinger is not None:
                pinger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pinger
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)


async def _serve(service: Service, name: str, requests: asyncio.Queue[_Request]) -> None:
    starting = asyncio.ensure_future(service.start())
    ended: asyncio.Future = starting
    next_request = asyncio.ensure_future(requests.get())
    try:
        status = ""
        while True:
            await asyncio.wait({ended, next_request}, return_when=asyncio.FIRST_COMPLETED)
            if ended is starting and starting.done():
                status = starting.result()
                systemd.notify("READY=1", f"STATUS={status}")
                log.info("%s ready: %s", name, status)
                ended = asyncio.ensure_future(service.finished())
                continue
            if ended.done():
                ended.result()
                log.error("%s ended on its own", name)
                return
            request = next_request.result()
            next_request = asyncio.ensure_future(requests.get())
            if request is _Request.STOP:
                return
            if ended is starting:
                # It reads its configuration as it starts: nothing older to replace.
                log.info("%s is starting: SIGHUP ignored", name)
                continue
            status = await _reload(service, name, status)
    finally:
        for future in (starting, ended, next_request):
            future.cancel()
        await asyncio.gather(starting, ended, return_exceptions=True)


async def _reload(service: Service, name: str, status: str) -> str:
    """One SIGHUP: the new STATUS text, or the old one when the reload was refused."""
    if not service.reloadable:
        log.warning("%s has nothing to reload: SIGHUP ignored", name)
        return status
    systemd.notify("RELOADING=1", f"MONOTONIC_USEC={_monotonic_usec()}", f"STATUS={name} reloading")
    # A refused or failed reload never stops the daemon: the old configuration stays.
    try:
        status = await service.reload()
    except SendenseError as exc:
        log.error("%s reload refused, keeping the running configuration: %s", name, exc)
    except Exception:
        log.exception("%s reload failed, keeping the running configuration", name)
    else:
        log.info("%s reloaded: %s", name, status)
    systemd.notify("READY=1", f"STATUS={status}")
    return status
