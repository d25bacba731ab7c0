"""One qemu-nbd per disk: start it on its address, wait for NBD, watch, flush, stop.

An export listens on a unix socket of its node's directory (or, in the old
layout, on a TCP port); the hub reaches it through that same address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbd

from sendense_tools.hub.options import ExportOptions
from sendense_tools.process import describe_exit, dying_with_parent

log = logging.getLogger(__name__)

NBD_MAGIC = b"NBDMAGIC"
IHAVEOPT = b"IHAVEOPT"
NBD_OPT_ABORT = 2
STOP_GRACE = 5.0


class ExportError(Exception):
    """An export that could not be created, started or flushed (one line for a person)."""


@dataclass(frozen=True)
class ExportAddress:
    """Where the export of one slot listens: a unix socket, or a TCP port of `host`."""

    slot: int
    socket: Path | None = None
    host: str = "127.0.0.1"

    def qemu_args(self) -> list[str]:
        if self.socket is not None:
            return ["-k", str(self.socket)]
        return ["-b", self.host, "-p", str(self.slot)]

    def __str__(self) -> str:
        return str(self.socket) if self.socket is not None else f"{self.host}:{self.slot}"

    def uri(self, export: str) -> str:
        if self.socket is not None:
            return f"nbd+unix:///{export}?socket={self.socket}"
        return f"nbd://{self.host}:{self.slot}/{export}"

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.socket is not None:
            return await asyncio.open_unix_connection(str(self.socket))
        return await asyncio.open_connection(self.host, self.slot)

    def connect(self, handle: nbd.NBD) -> None:
        """Start an async libnbd connect to this address (the export name is set already)."""
        if self.socket is not None:
            handle.aio_connect_unix(str(self.socket))
        else:
            handle.aio_connect_tcp(self.host, str(self.slot))


@dataclass
class Export:
    """A running qemu-nbd serving one qcow2 on one slot's address."""

    disk_id: str
    address: ExportAddress
    name: str
    path: Path
    opts: ExportOptions
    proc: asyncio.subprocess.Process
    stopping: bool = False
    stderr_tail: str = ""
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    _watch: asyncio.Task | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def slot(self) -> int:
        return self.address.slot

    @property
    def uri(self) -> str:
        return self.address.uri(self.name)

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()

    def exit_reason(self) -> str:
        reason = (
            f"qemu-nbd for {self.disk_id} (slot {self.slot}) {describe_exit(self.proc.returncode)}"
        )
        return f"{reason}: {self.stderr_tail}" if self.stderr_tail else reason

    async def _watch_process(self, on_exit: Callable[[Export], None]) -> None:
        assert self.proc.stderr is not None
        # stderr reaches EOF the moment qemu-nbd dies, however it dies.
        tail = b""
        while chunk := await self.proc.stderr.read(4096):
            tail = (tail + chunk)[-2048:]
        await self.proc.wait()
        lines = tail.decode(errors="replace").strip().splitlines()
        self.stderr_tail = lines[-1] if lines else ""
        self.exited.set()
        if not self.stopping:
            on_exit(self)

    async def wait_ready(self) -> None:
        """Return once the export answers an NBD handshake; ExportError if it dies or hangs."""
        deadline = time.monotonic() + self.opts.ready_timeout
        while True:
            if self.exited.is_set():
                raise ExportError(self.exit_reason())
            if await _handshake(self.address):
                return
            if time.monotonic() > deadline:
                raise ExportError(
                    f"qemu-nbd for {self.disk_id} on {self.address} did not answer NBD "
                    f"within {self.opts.ready_timeout:.0f} s"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.exited.wait(), 0.02)

    async def flush(self, tls_username: str | None, psk_file: Path | None) -> None:
        if not self.alive:
            raise ExportError(self.exit_reason())
        await asyncio.to_thread(_flush, self.address, self.name, tls_username, psk_file, 30.0)

    async def stop(self) -> int | None:
        """SIGTERM (qemu-nbd then flushes and closes the image), SIGKILL after 5 s."""
        self.stopping = True
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.exited.wait(), STOP_GRACE)
            except TimeoutError:
                log.warning("qemu-nbd pid %d ignored SIGTERM; killing it", self.pid)
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
        if self._watch is not None:
            await self._watch
        # qemu-nbd removes its socket on a clean exit, not when killed.
        if self.address.socket is not None:
            with contextlib.suppress(OSError):
                self.address.socket.unlink()
        return self.proc.returncode


async def start_export(
    disk_id: str,
    address: ExportAddress,
    name: str,
    path: Path,
    opts: ExportOptions,
    on_exit: Callable[[Export], None],
    tls_dir: Path | None = None,
) -> Export:
    argv = ["qemu-nbd", *opts.qemu_args(), *address.qemu_args(), "-x", name]
    if tls_dir is not None:
        argv += ["--object", f"tls-creds-psk,id=tls0,endpoint=server,dir={tls_dir}"]
        argv += ["--tls-creds", "tls0"]
    argv.append(str(path))
    # setpriv: if the hub dies without cleaning up, the kernel sends SIGTERM to
    # its qemu-nbd children; reconciliation at the next start is the second net.
    argv = dying_with_parent(argv)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        # The socket gets mode 0770: the node's tunnel user (the directory's group)
        # must be able to connect(), which takes write permission on the socket.
        umask=0o007,
    )
    export = Export(disk_id, address, name, path, opts, proc)
    export._watch = asyncio.create_task(export._watch_process(on_exit))
    return export


async def _handshake(address: ExportAddress) -> bool:
    """The server's NBD greeting, answered with NBD_OPT_ABORT so it closes cleanly."""
    try:
        reader, writer = await asyncio.wait_for(address.open(), 5)
    except (OSError, TimeoutError):
        return False
    try:
        greeting = await asyncio.wait_for(reader.readexactly(18), 5)
        if greeting[:16] != NBD_MAGIC + IHAVEOPT:
            return False
        server_flags = struct.unpack(">H", greeting[16:])[0]
        writer.write(struct.pack(">I", server_flags & 0x3))
        writer.write(IHAVEOPT + struct.pack(">II", NBD_OPT_ABORT, 0))
        await writer.drain()
        return True
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _flush(
    address: ExportAddress,
    name: str,
    tls_username: str | None,
    psk_file: Path | None,
    timeout: float,
) -> None:
    """NBD flush through a fresh connection, bounded in time (a full --shared blocks accept)."""
    uri = address.uri(name)
    handle = nbd.NBD()
    try:
        if tls_username and psk_file:
            handle.set_tls(nbd.TLS_REQUIRE)
            handle.set_tls_username(tls_username)
            handle.set_tls_psk_file(str(psk_file))
        handle.set_export_name(name)
        address.connect(handle)
        deadline = time.monotonic() + timeout
        while handle.aio_is_connecting():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ExportError(f"flush of {uri}: no NBD connection within {timeout:.0f} s")
            handle.poll(int(remaining * 1000))
        if not handle.aio_is_ready():
            raise ExportError(f"flush of {uri}: NBD handshake failed")
        handle.flush()
        with contextlib.suppress(nbd.Error):
            handle.shutdown()
    except nbd.Error as exc:
        raise ExportError(f"flush of {uri} failed: {exc.string}") from None
