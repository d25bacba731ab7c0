"""The daemon runner against a real NOTIFY_SOCKET and real signals to this process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sendense_tools import daemon
from sendense_tools.errors import ConfigError

WAIT = 30  # seconds: generous, only to turn a hang into a clear failure


class Notify:
    """The systemd end of sd_notify: a unix datagram socket and what arrived on it."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[list[str]] = []

    async def until(self, line: str) -> list[str]:
        """Read datagrams until one holds `line`; that datagram's lines."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), WAIT)
            except TimeoutError:
                pytest.fail(f"no {line!r} from the daemon within {WAIT} s: {self.messages}")
            lines = data.decode().splitlines()
            self.messages.append(lines)
            if line in lines:
                return lines

    def lines(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode().splitlines())
            except BlockingIOError:
                return [line for msg in self.messages for line in msg]


@pytest.fixture
def notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Notify]:
    endpoint = Notify(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield endpoint
    endpoint.sock.close()


class Recorder(daemon.Service):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.generation = 0
        self.broken_config = False
        self.buggy = False
        self.crash = asyncio.Event()
        self.start_gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def start(self) -> str:
        self.calls.append("start")
        self.started.set()
        if self.start_gate is not None:
            await self.start_gate.wait()
        return "serving generation 0"

    async def stop(self) -> None:
        self.calls.append("stop")

    async def finished(self) -> None:
        await self.crash.wait()
        raise RuntimeError("connection loop crashed")


class Reloadable(Recorder):
    reloadable = True

    async def reload(self) -> str:
        self.calls.append("reload")
        if self.broken_config:
            raise ConfigError("hub.toml: nodes.a: unknown key")
        if self.buggy:
            raise KeyError("nodes")
        self.generation += 1
        return f"serving generation {self.generation}"


def kill(sig: signal.Signals) -> None:
    os.kill(os.getpid(), sig)


async def test_ready_reload_and_stop_are_told_to_systemd(notify):
    service = Reloadable()
    task = asyncio.create_task(daemon.run(service, "hub"))
    assert await notify.until("READY=1") == ["READY=1", "STATUS=serving generation 0"]

    kill(signal.SIGHUP)
    reloading = await notify.until("RELOADING=1")
    assert any(line.startswith("MONOTONIC_USEC=") for line in reloading)
    assert await notify.until("READY=1") == ["READY=1", "STATUS=serving generation 1"]

    kill(signal.SIGTERM)
    await asyncio.wait_for(task, WAIT)
    assert "STOPPING=1" in notify.lines()
    assert service.calls == ["start", "reload", "stop"]


async def test_a_refused_reload_keeps_the_daemon_and_its_status(notify, caplog):
    service = Reloadable()
    service.broken_config = True
    task = asyncio.create_task(daemon.run(service, "hub"))
    await notify.until("READY=1")

    kill(signal.SIGHUP)
    await notify.until("RELOADING=1")
    assert await notify.until("READY=1") == ["READY=1", "STATUS=serving generation 0"]
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused == [
        "hub reload refused, keeping the running configuration: hub.toml: nodes.a: unknown key"
    ]
    assert not task.done()

    kill(signal.SIGINT)
    await asyncio.wait_for(task, WAIT)
    assert service.calls == ["start", "reload", "stop"]


async def test_a_reload_that_fails_is_logged_with_its_traceback_and_the_daemon_goes_on(
    notify, caplog
):
    service = Reloadable()
    service.buggy = True
    task = asyncio.create_task(daemon.run(service, "hub"))
    await notify.until("READY=1")
    kill(signal.SIGHUP)
    await notify.until("RELOADING=1")
    assert await notify.until("READY=1") == ["READY=1", "STATUS=serving generation 0"]
    (failed,) = [r for r in caplog.records if "reload failed" in r.getMessage()]
    assert failed.exc_info is not None and failed.exc_info[0] is KeyError
    service.buggy = False
    kill(signal.SIGHUP)
    assert await notify.until("READY=1") == ["READY=1", "STATUS=serving generation 1"]
    kill(signal.SIGTERM)
    await asyncio.wait_for(task, WAIT)


async def test_sighup_without_reload_is_logged_and_ignored(notify, caplog):
    caplog.set_level(logging.INFO)
    service = Recorder()
    task = asyncio.create_task(daemon.run(service, "node"))
    await notify.until("READY=1")

    kill(signal.SIGHUP)
    # The runner handles requests in order: once the stop is through, so was the SIGHUP.
    kill(signal.SIGTERM)
    await asyncio.wait_for(task, WAIT)
    assert "node has nothing to reload: SIGHUP ignored" in caplog.text
    assert "RELOADING=1" not in notify.lines()
    assert service.calls == ["start", "stop"]


async def test_watchdog_pings_at_half_the_timeout(notify, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    service = Recorder()
    task = asyncio.create_task(daemon.run(service, "tunnel"))
    await notify.until("READY=1")
    for _ in range(3):
        await notify.until("WATCHDOG=1")
    kill(signal.SIGTERM)
    await asyncio.wait_for(task, WAIT)


async def test_no_watchdog_pings_when_the_unit_sets_none(notify):
    service = Recorder()
    task = asyncio.create_task(daemon.run(service, "hub"))
    await notify.until("READY=1")
    kill(signal.SIGTERM)
    await asyncio.wait_for(task, WAIT)
    assert "WATCHDOG=1" not in notify.lines()


async def test_a_stop_while_starting_cancels_the_start_and_cleans_up(notify):
    service = Recorder()
    service.start_gate = asyncio.Event()  # e.g. the tunnel, waiting for its hub
    task = asyncio.create_task(daemon.run(service, "tunnel"))
    await asyncio.wait_for(service.started.wait(), WAIT)
    kill(signal.SIGTERM)
    await asyncio.wait_for(task, WAIT)
    lines = notify.lines()
    assert "READY=1" not in lines and "STOPPING=1" in lines
    assert service.calls == ["start", "stop"]


async def test_a_service_that_ends_by_itself_is_stopped_and_its_error_raised(notify):
    service = Recorder()
    task = asyncio.create_task(daemon.run(service, "tunnel"))
    await notify.until("READY=1")
    service.crash.set()
    with pytest.raises(RuntimeError, match="connection loop crashed"):
        await asyncio.wait_for(task, WAIT)
    assert "STOPPING=1" in notify.lines()
    assert service.calls == ["start", "stop"]


async def test_signal_handlers_are_gone_after_the_run(notify):
    service = Recorder()
    task = asyncio.create_task(daemon.run(service, "hub"))
    await notify.until("READY=1")
    kill(signal.SIGTERM)
    await asyncio.wait_for(task, WAIT)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        assert not loop.remove_signal_handler(sig)
