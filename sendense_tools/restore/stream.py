"""One disk of a restore point, from the hub's read-only NBD export, as ordered chunks.

The chunks are the body of one datastore PUT, so they come in offset order and
cover the whole capacity. Only data extents (base:allocation) are read over the
tunnel; zero extents become zero chunks here. A reader thread stays a few chunks
ahead of the upload (bounded memory: `READ_AHEAD` chunks of `CHUNK` bytes), and
reconnects when the tunnel drops (nbd/retry.py), going on at the offset it
stopped at: nothing is sent twice, nothing is skipped.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator

import nbd

from sendense_tools.errors import SendenseError
from sendense_tools.nbd.connect import (
    NbdFailure,
    PskFile,
    Stopped,
    close_handle,
    describe,
    io_failure,
    open_handle,
)
from sendense_tools.nbd.copy import STALL_TIMEOUT
from sendense_tools.nbd.endpoint import NbdEndpoint
from sendense_tools.nbd.extents import window
from sendense_tools.nbd.retry import Reconnects

CHUNK = 4 << 20
READ_AHEAD = 4
POLL_MS = 100
_ZERO = bytes(CHUNK)
_END = object()


class StreamError(SendenseError):
    """The point's export could not be read; one line naming the disk."""


class DiskStream:
    """Iterate to get the disk's bytes; close() (or the end) stops the reader thread."""

    def __init__(
        self,
        disk_id: str,
        source: NbdEndpoint,
        capacity: int,
        *,
        retry_for: float = 300.0,
        on_progress: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.disk_id = disk_id
        self.source = source
        self.capacity = capacity
        self.retry_for = retry_for
        self.on_progress = on_progress
        self.bytes_read = 0  # data bytes read over the tunnel (zero extents excluded)
        self._at = 0  # where the reader goes on after a reconnect
        # The caller's cancel ends the iteration; close() (which the end of the
        # iteration calls) sets `stop`, which the reader sees within a poll.
        self.cancel = cancel if cancel is not None else threading.Event()
        self.stop = threading.Event()
        self._chunks: queue.Queue[object] = queue.Queue(READ_AHEAD)
        self._thread = threading.Thread(target=self._produce, name=f"restore-read-{disk_id}")
        self._started = False

    def __iter__(self) -> Iterator[bytes | bytearray]:
        if not self._started:
            self._started = True
            self._thread.start()
        sent = 0
        try:
            while True:
                try:
                    item = self._chunks.get(timeout=POLL_MS / 1000)
                except queue.Empty:
                    if self.cancel.is_set() or self.stop.is_set():
                        raise StreamError(f"{self.disk_id}: stopped") from None
                    continue
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, bytes | bytearray)
                yield item
                sent += len(item)
                if self.on_progress is not None:
                    self.on_progress(sent)
        finally:
            self.close()

    def close(self) -> None:
        self.stop.set()
        if self._started:
            while self._thread.is_alive():
                # Unblock a reader waiting on a full queue.
                try:
                    self._chunks.get_nowait()
                except queue.Empty:
                    self._thread.join(0.05)

    def _put(self, item: object) -> None:
        while not self.stop.is_set():
            try:
                self._chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise Stopped()

    def _produce(self) -> None:
        psk = PskFile(self.source.tls) if self.source.tls else None
        reconnects = Reconnects(self.retry_for, self.stop)
        try:
            while True:
                try:
                    self._attempt(psk.path if psk else None, reconnects)
                    self._put(_END)
                    return
                except NbdFailure as f:
                    why = reconnects.wait(f)
                    if why is not None:
                        self._put(StreamError(f"{self.disk_id}: {why}"))
                        return
        except Stopped:
            return
        except BaseException as exc:  # handed to the consumer: the upload fails with it
            with contextlib.suppress(Stopped):
                self._put(exc)
        finally:
            if psk is not None:
                psk.remove()

    def _attempt(self, psk_file: str | None, reconnects: Reconnects) -> None:
        handle = open_handle(self.source, self.stop, psk_file=psk_file, allocation=True)
        try:
            size = handle.get_size()
            if size < self.capacity:
                raise NbdFailure(
                    f"export {self.source.uri} holds {size} bytes, the disk has {self.capacity}",
                    False,
                )

            def block_status(length: int, offset: int, collect: Callable[..., int]) -> None:
                self._wait(handle, handle.aio_block_status(length, offset, collect))

            while self._at < self.capacity:
                left = self.capacity - self._at
                for start, length, zero in window(handle, self._at, left, block_status):
                    self._extent(handle, start, length, zero, reconnects)
        except nbd.Error as e:
            what = f"read at offset {self._at} from {self.source.uri} ({describe(e)})"
            raise io_failure(what, handle, e.errnum or 0) from None
        finally:
            close_handle(handle)

    def _extent(
        self, handle: nbd.NBD, start: int, length: int, zero: bool, reconnects: Reconnects
    ) -> None:
        end = start + length
        at = start
        while at < end:
            if self.stop.is_set():
                raise Stopped()
            n = min(CHUNK, end - at)
            if zero:
                data = _ZERO if n == CHUNK else bytes(n)
            else:
                view = memoryview(bytearray(n))
                self._wait(handle, handle.aio_pread(nbd.Buffer.from_buffer(view), at))
                data = view.obj
                # libnbd 1.14's aio_pread never drops its reference to the buffer it read
                # into: released, the view no longer keeps every chunk of the disk alive.
                view.release()
                self.bytes_read += n
                reconnects.progressed()
            self._put(data)
            at += n
            self._at = at

    def _wait(self, handle: nbd.NBD, cookie: int) -> None:
        """Until the command `cookie` is done; Stopped once asked to stop, a transient
        NbdFailure when the server stops answering (a hung tunnel)."""
        deadline = time.monotonic() + STALL_TIMEOUT
        while not handle.aio_command_completed(cookie):
            if self.stop.is_set():
                raise Stopped()
            if time.monotonic() > deadline:
                raise NbdFailure(f"{self.source.uri}: no reply for {STALL_TIMEOUT:.0f} s", True)
            handle.poll(POLL_MS)
