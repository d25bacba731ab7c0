"""A userspace WAN emulator (this kernel has no netem): a TCP proxy that delays every
byte by a fixed time each way.

Run: python -m bench._delay_proxy LISTEN_PORT TARGET_PORT DELAY_MS [BANDWIDTH_MBIT];
it prints "ready" once listening.

The emulated link is a pure delay with a finite capacity: each direction holds at
most bandwidth x delay bytes in flight, shared by every connection (what a wire of
that bandwidth holds), so a sender that outruns it is pushed back through TCP like
on a real link, and the link never buffers without bound. The default bandwidth,
10 Gbit/s, is far above what any tunnel reaches on this machine: the figures
measure the tunnel, not the emulator (`bench/tunnel.py` prints the link's own
ceiling beside them). Per-connection TCP windows are the kernel's own (loopback).

Each direction of each connection has a reader thread (big recv_into, stamps the
chunk with its due time) and a writer thread (sleeps until due, sends everything
that is due in one go): socket calls release the GIL, so the two cores carry the
bytes, not one asyncio loop with 64 KiB stream buffers and an unbounded queue.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections import deque

# One read takes up to this much; writes coalesce what is due up to the same size.
CHUNK = 4 * 1024 * 1024
# Socket buffers big enough that the kernel never holds the link back.
SOCKET_BUFFER = 4 * 1024 * 1024
DEFAULT_BANDWIDTH_MBIT = 10_000


class Capacity:
    """The bytes one direction of the link holds at once, shared by all connections."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    def take(self, n: int) -> None:
        with self._cond:
            # A chunk larger than the whole link still passes, alone.
            while self.used and self.used + n > self.limit:
                self._cond.wait()
            self.used += n

    def give(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


class _Pipe:
    """One direction of one connection: src -> (delay) -> dst."""

    def __init__(self, src: socket.socket, dst: socket.socket, delay: float, cap: Capacity):
        self.src, self.dst, self.delay, self.cap = src, dst, delay, cap
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.ready = threading.Condition()
        self.broken = False

    def read_loop(self) -> None:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            while True:
                n = self.src.recv_into(buf)
                data = bytes(view[:n]) if n else None
                if n:
                    self.cap.take(n)
                with self.ready:
                    if self.broken:
                        self.cap.give(n)
                        return
                    self.queue.append((time.monotonic() + self.delay, data))
                    self.ready.notify()
                if data is None:
                    return
        except OSError:
            self._break()

    def write_loop(self) -> None:
        try:
            while True:
                with self.ready:
                    while not self.queue and not self.broken:
                        self.ready.wait()
                    if self.broken:
                        return
                    due, _ = self.queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                batch, eof = self._take_due()
                if batch:
                    try:
                        self.dst.sendall(b"".join(batch) if len(batch) > 1 else batch[0])
                    finally:
                        self.cap.give(sum(len(b) for b in batch))
                if eof:
                    self.dst.shutdown(socket.SHUT_WR)
                    return
        except OSError:
            self._break()

    def _take_due(self) -> tuple[list[bytes], bool]:
        """Every chunk that is due now (up to CHUNK bytes), and whether EOF follows."""
        now = time.monotonic()
        batch: list[bytes] = []
        size = 0
        with self.ready:
            while self.queue and self.queue[0][0] <= now and size < CHUNK:
                _, data = self.queue.popleft()
                if data is None:
                    return batch, True
                batch.append(data)
                size += len(data)
        return batch, False

    def _break(self) -> None:
        # A reset on either side resets the other: the peer sees the loss, not a hang.
        with self.ready:
            self.broken = True
            # What the link still held is lost, and its capacity free for the others.
            self.cap.give(sum(len(d) for _, d in self.queue if d is not None))
            self.queue.clear()
            self.ready.notify_all()
        for s in (self.src, self.dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)


def _connection(client: socket.socket, target_port: int, delay: float, caps: list[Capacity]):
    try:
        upstream = socket.create_connection(("127.0.0.1", target_port))
    except OSError:
        client.close()
        return
    for s in (client, upstream):
        _tune(s)
    pipes = [_Pipe(client, upstream, delay, caps[0]), _Pipe(upstream, client, delay, caps[1])]
    threads = [
        threading.Thread(target=loop, daemon=True)
        for p in pipes
        for loop in (p.read_loop, p.write_loop)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    upstream.close()


def serve(listen_port: int, target_port: int, delay: float, bandwidth_mbit: float) -> None:
    limit = max(int(bandwidth_mbit * 1e6 / 8 * delay), CHUNK)
    caps = [Capacity(limit), Capacity(limit)]
    server = socket.create_server(("127.0.0.1", listen_port), backlog=128)
    print("ready", flush=True)
    while True:
        client, _ = server.accept()
        threading.Thread(
            target=_connection, args=(client, target_port, delay, caps), daemon=True
        ).start()


if __name__ == "__main__":
    args = sys.argv[1:]
    bandwidth = float(args[3]) if len(args) > 3 else DEFAULT_BANDWIDTH_MBIT
    serve(int(args[0]), int(args[1]), float(args[2]) / 1000, bandwidth)
