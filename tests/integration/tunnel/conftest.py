"""Fixtures for tunnel tests: hub-side echo targets and `sendense tunnel run` processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.sshd import ROOT, Sshd, write_toml

NODE_BIND = "127.0.0.2"


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def unix_echo(path: Path) -> asyncio.Server:
    """An echo server on a hub socket, connectable by the directory's group like an export."""
    server = await asyncio.start_unix_server(_echo, str(path))
    os.chmod(path, 0o770)
    return server


@pytest.fixture
async def hub_echo(sshd: Sshd) -> AsyncIterator[list[int]]:
    """An echo server on the hub side of every forwarded port: node a's slot sockets (or
    the slot ports in the old layout) and the API port. Yields the local port numbers."""
    ports = [*sshd.slots, sshd.api_port]
    if sshd.listen == "unix":
        servers = [await unix_echo(sshd.slot_socket(p)) for p in sshd.slots]
        servers.append(await asyncio.start_server(_echo, "127.0.0.1", sshd.api_port))
    else:
        servers = [await asyncio.start_server(_echo, "127.0.0.1", p) for p in ports]
    yield ports
    for server in servers:
        server.close()
        await server.wait_closed()


async def echo_roundtrip(port: int, payload: bytes, host: str = NODE_BIND) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        return await asyncio.wait_for(reader.read(-1), 60)
    finally:
        writer.close()


@dataclass
class Tunnel:
    proc: asyncio.subprocess.Process
    status_file: Path
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def status(self) -> dict:
        with contextlib.suppress(OSError, ValueError):
            return json.loads(self.status_file.read_text())
        return {}

    async def wait_for(self, predicate: Callable[[dict], bool], what: str, within: float = 60):
        """Poll the status file until `predicate` holds (generous timeout: noisy machine)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            st = self.status()
            if st and predicate(st):
                return st
            if self.proc.returncode is not None:
                code = self.proc.returncode
                pytest.fail(f"tunnel exited ({code}) waiting for {what}:\n{self.log()}")
            if loop.time() > deadline:
                pytest.fail(f"timed out waiting for {what}; status {st}\n{self.log()[-3000:]}")
            await asyncio.sleep(0.05)

    async def wait_up(self) -> dict:
        return await self.wait_for(
            lambda s: s["connected"] and s["forwards_up"] == s["forwards_total"], "all forwards up"
        )


async def refused(port: int, host: str = NODE_BIND) -> bool:
    """True when a client's data is answered by a close or a reset, not by the far end."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"anyone there?")
        await writer.drain()
        return await asyncio.wait_for(reader.read(-1), 60) == b""
    except ConnectionResetError:
        return True
    finally:
        writer.close()


def tunnel_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sendense_tools.tunnel", *args]


@pytest.fixture
async def start_tunnel(sshd: Sshd) -> AsyncIterator[Callable]:
    """Start `sendense tunnel run` against the sshd; every process is stopped at the end."""
    procs: list[asyncio.subprocess.Process] = []
    node = sshd.base / "node"
    node.mkdir()

    async def start(env: dict | None = None, **sections: dict) -> Tunnel:
        n = len(procs)
        status = node / f"status-{n}.json"
        config = write_toml(node / f"tunnel-{n}.toml", sshd.tunnel_config(status, **sections))
        log = node / f"tunnel-{n}.log"
        with log.open("w") as out:
            proc = await asyncio.create_subprocess_exec(
                *tunnel_command("run", "--config", str(config)),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
            )
        procs.append(proc)
        return Tunnel(proc, status, log)

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
