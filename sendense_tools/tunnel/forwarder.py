"""Local listeners that the supervisor owns, bridged to SSH channels.

A port leads either to a TCP port on the hub (direct-tcpip: the API port, and
the NBD slots in the old layout) or to a unix socket path on the hub
(direct-streamlocal@openssh.com, the channel asyncssh's
forward_local_port_to_path opens: this node's NBD slot sockets).

The listening sockets live as long as the process, not as long as one SSH
connection: a reconnect never unbinds a port that the copy engine or the API
client is about to use. Each accepted client gets a channel over whichever
connection is up; during an outage it waits `outage_wait` seconds for one.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncssh

from sendense_tools.errors import SendenseError
from sendense_tools.tunnel.events import log_event

# Bytes buffered towards a local client before the channel stops reading; big
# enough that one 256 KiB SSH packet never stalls the pipe on its own.
LOCAL_WRITE_HIGH_WATER = 4 * 1024 * 1024

# Returns a live connection, or None when none came up within the outage wait.
Acquire = Callable[[], Awaitable[asyncssh.SSHClientConnection | None]]
Channel = asyncssh.SSHTCPChannel[bytes] | asyncssh.SSHUNIXChannel[bytes]


@dataclass(frozen=True)
class Target:
    """The hub end of one local port: a unix socket `path`, else TCP `host`:`port`."""

    host: str = "127.0.0.1"
    port: int = 0
    path: str | None = None

    def __str__(self) -> str:
        return self.path if self.path is not None else f"{self.host}:{self.port}"


class _ChannelSide(asyncssh.SSHTCPSession[bytes], asyncssh.SSHUNIXSession[bytes]):
    def __init__(self, client: _ClientSide) -> None:
        self._client = client

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self._client.send_local(data)

    def eof_received(self) -> bool:
        self._client.eof_local()
        return True

    # The channel's send window is full: stop reading from the local client.
    def pause_writing(self) -> None:
        self._client.pause_local()

    def resume_writing(self) -> None:
        self._client.resume_local()

    def connection_lost(self, exc: Exception | None) -> None:
        self._client.channel_closed(exc)


class _ClientSide(asyncio.Protocol):
    def __init__(self, forwards: LocalForwards, port: int) -> None:
        self._forwards = forwards
        self._port = port
        self._target = forwards.targets[port]
        self._transport: asyncio.Transport | None = None
        self._chan: Channel | None = None
        # What the client sent before the channel was open.
        self._early: list[bytes] = []
        self._early_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=LOCAL_WRITE_HIGH_WATER)
        # Read as little as possible until the channel exists. (Python 3.11 registers
        # the reader after connection_made, so a pause here would be undone.)
        asyncio.get_running_loop().call_soon(self._pause_until_open)
        self._forwards.active.add(self)
        self._forwards.spawn(self._open_channel())

    def _pause_until_open(self) -> None:
        if self._chan is None and self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    async def _open_channel(self) -> None:
        conn = await self._forwards.acquire()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        target = self._target
        if conn is None:
            log_event(
                "forward_refused", "warning", port=self._port, target=str(target),
                reason="hub unreachable",
            )  # fmt: skip
            transport.close()
            return
        try:
            chan = await self._open(conn, transport)
        except (asyncssh.ChannelOpenError, asyncssh.Error, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            log_event(
                "forward_refused", "warning", port=self._port, target=str(target), reason=reason
            )
            transport.abort()
            return
        if transport.is_closing():
            chan.close()
            return
        self._chan = chan
        chan.set_write_buffer_limits(high=self._forwards.window)
        for data in self._early:
            chan.write(data)
        self._early.clear()
        if self._early_eof:
            chan.write_eof()
        else:
            transport.resume_reading()

    async def _open(
        self, conn: asyncssh.SSHClientConnection, transport: asyncio.Transport
    ) -> Channel:
        fw, target = self._forwards, self._target
        if target.path is not None:
            chan, _ = await conn.create_unix_connection(
                lambda: _ChannelSide(self),
                target.path,
                window=fw.window,
                max_pktsize=fw.max_pktsize,
            )
            return chan
        peer = transport.get_extra_info("peername") or ("", 0)
        chan, _ = await conn.create_connection(
            lambda: _ChannelSide(self),
            target.host,
            target.port,
            peer[0],
            peer[1],
            window=fw.window,
            max_pktsize=fw.max_pktsize,
        )
        return chan

    def send_local(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def eof_local(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            try:
                self._transport.write_eof()
            except OSError:
                # The client reset the socket and the loop has not read that yet. Raised
                # from here, asyncssh would close the whole SSH connection (every channel).
                self._transport.abort()

    def pause_local(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_local(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def channel_closed(self, exc: Exception | None) -> None:
        self._chan = None
        if self._transport is not None:
            # A lost SSH connection resets the client so it knows the data did not arrive.
            if exc is None:
                self._transport.close()
            else:
                self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._chan is not None:
            self._chan.write(data)
        else:
            self._early.append(data)
            self._pause_until_open()

    def eof_received(self) -> bool:
        if self._chan is not None:
            self._chan.write_eof()
        else:
            self._early_eof = True
        return True

    # The local client is slow to read: stop reading from the channel.
    def pause_writing(self) -> None:
        if self._chan is not None:
            self._chan.pause_reading()

    def resume_writing(self) -> None:
        if self._chan is not None:
            self._chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._forwards.active.discard(self)
        self._transport = None
        if self._chan is not None:
            self._chan.close()
            self._chan = None

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class LocalForwards:
    """Every local port, bound once at start-up and kept until stop()."""

    def __init__(
        self,
        bind: str,
        targets: dict[int, Target],
        acquire: Acquire,
        *,
        window: int,
        max_pktsize: int,
    ) -> None:
        self.bind = bind
        self.targets = targets
        self.ports = list(targets)
        self.acquire = acquire
        self.window = window
        self.max_pktsize = max_pktsize
        self.active: set[_ClientSide] = set()
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        """Bind every port or none: a port in use is an error naming it."""
        loop = asyncio.get_running_loop()
        try:
            for port in self.ports:
                server = await loop.create_server(
                    lambda port=port: _ClientSide(self, port),
                    self.bind,
                    port,
                    reuse_address=True,
                    backlog=128,
                )
                self._servers.append(server)
        except OSError as exc:
            await self.stop()
            if exc.errno == errno.EADDRINUSE:
                raise SendenseError(
                    f"cannot listen on {self.bind}:{port}: the port is already in use"
                ) from None
            raise SendenseError(f"cannot listen on {self.bind}:{port}: {exc.strerror}") from None

    @property
    def bound(self) -> int:
        return len(self._servers)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for client in list(self.active):
            client.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
