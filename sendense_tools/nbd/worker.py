"""One copy worker: a thread with one source handle, its share of the target handles, and one
poll loop keeping many requests in flight (libnbd releases the GIL around every C call, so
the workers of a disk, and of all disks, really overlap)."""

from __future__ import annotations

import select
import threading
import time
from functools import partial
from typing import TYPE_CHECKING

import nbd

from sendense_tools.nbd.connect import (
    NbdFailure,
    Stopped,
    close_handle,
    describe,
    io_failure,
    open_handle,
)
from sendense_tools.nbd.planner import Chunk

if TYPE_CHECKING:
    from sendense_tools.nbd.disk_copy import DiskCopy

SPARSE_SIZE = 4096  # zero detection granularity inside data
STALL_TIMEOUT = 120.0  # requests in flight and no reply for this long: treat as a dead link

_IN = select.POLLIN | select.POLLHUP | select.POLLERR


class Worker:
    """One thread: a source handle, some target handles, one poll loop."""

    def __init__(
        self,
        copy: DiskCopy,
        keys: list[int],
        src: nbd.NBD | None = None,
        dsts: dict[int, nbd.NBD] | None = None,
    ) -> None:
        self.copy = copy
        self.keys = keys
        self.src = src
        self.dsts: dict[int, nbd.NBD] = dict(dsts or {})
        self.error: BaseException | None = None
        self._stop = copy.stop
        self._planner = copy.planner
        self._pool = copy.pool
        self._done: list[tuple[tuple, int]] = []
        self._inflight = 0
        self._active = 0
        self._next_dst = 0
        self._order = list(self.dsts.values())
        self.thread = threading.Thread(target=self._main, name=f"nbd-copy-{copy.disk_id}")

    def _main(self) -> None:
        try:
            try:
                self._connect()
                self._loop()
            except nbd.Error as e:  # a request refused at once, e.g. on a handle that just died
                # Without TLS a connection the tunnel drops ends in a clean EOF: the handle
                # is then CLOSED, not DEAD, and just as worth reconnecting.
                handles = [h for h in [self.src, *self.dsts.values()] if h]
                dead = any(h.aio_is_dead() or h.aio_is_closed() for h in handles)
                raise NbdFailure(describe(e), dead) from None
        except BaseException as e:
            self.error = e
        finally:
            for h in [self.src, *self.dsts.values()]:
                close_handle(h)
            self.src, self.dsts, self._order = None, {}, []
            self.copy.exits.put(self)

    def _connect(self) -> None:
        c = self.copy
        if self.src is None:
            self.src = open_handle(c.source, self._stop, psk_file=c.src_psk, allocation=True)
        for key in self.keys:
            if key not in self.dsts:
                self.dsts[key] = open_handle(c.target, self._stop, psk_file=c.dst_psk)
        self._order = [self.dsts[k] for k in self.keys]

    def _cb(self, tag: tuple, err: object) -> int:
        # Runs inside libnbd calls (possibly inside the planner's block_status): only record.
        self._done.append((tag, err.value))
        return 1

    def _loop(self) -> None:
        handles = [self.src, *self._order]
        uris = {}
        poller = select.poll()
        for h, uri in zip(
            handles, [self.copy.source.uri] + [self.copy.target.uri] * len(self._order), strict=True
        ):
            fd = h.aio_get_fd()
            uris[fd] = (h, uri)
            poller.register(fd, 0)
        last_reply = time.monotonic()
        planner = self._planner
        while True:
            if self._stop.is_set():
                raise Stopped()
            self._issue()
            for key in planner.flushes_for(self.keys):
                self._inflight += 1
                self.dsts[key].aio_flush(completion=partial(self._cb, ("flush", key)))
            if self._inflight == 0 and planner.finished():
                return
            for fd, (h, _) in uris.items():
                d = h.aio_get_direction()
                poller.modify(
                    fd,
                    (select.POLLIN if d & nbd.AIO_DIRECTION_READ else 0)
                    | (select.POLLOUT if d & nbd.AIO_DIRECTION_WRITE else 0),
                )
            for fd, ev in poller.poll(100 if self._inflight else 5):
                h, uri = uris[fd]
                try:
                    if ev & _IN:
                        h.aio_notify_read()
                    if ev & select.POLLOUT and not h.aio_is_dead():
                        h.aio_notify_write()
                except nbd.Error as e:
                    raise NbdFailure(f"connection to {uri} lost: {describe(e)}", True) from None
            if self._done:
                last_reply = time.monotonic()
                done, self._done = self._done, []
                for tag, err in done:
                    self._finish(tag, err)
            elif self._inflight and time.monotonic() - last_reply > STALL_TIMEOUT:
                raise NbdFailure(f"no reply for {STALL_TIMEOUT:.0f} s", True)

    def _issue(self) -> None:
        copy = self.copy
        while self._active < copy.requests:
            slot = self._pool.get()
            if slot is None:
                return
            chunk = self._planner.next_chunk(self.src)
            if chunk is None:
                self._pool.put(slot)
                return
            self._active += 1
            if chunk.zero:
                self._pool.put(slot)
                copy.hasher.submit(chunk.offset, chunk.length, None)
                chunk.zero_bytes = chunk.length
                self._zero(chunk, chunk.offset, chunk.length)
                continue
            chunk.slot = slot
            chunk.buf = slot[: chunk.length]
            chunk.buffer = nbd.Buffer.from_buffer(chunk.buf)
            self._inflight += 1
            self.src.aio_pread(
                chunk.buffer, chunk.offset, completion=partial(self._cb, ("read", chunk))
            )

    def _dst(self) -> tuple[int, nbd.NBD]:
        i = self._next_dst
        self._next_dst = (i + 1) % len(self._order)
        return self.keys[i], self._order[i]

    def _zero(self, chunk: Chunk, offset: int, length: int) -> None:
        key, dst = self._dst()
        chunk.writes += 1
        self._inflight += 1
        dst.aio_zero(length, offset, completion=partial(self._cb, ("write", chunk, key, None)))

    def _finish(self, tag: tuple, err: int) -> None:
        self._inflight -= 1
        kind = tag[0]
        if kind == "read":
            chunk = tag[1]
            if err:
                raise io_failure(
                    f"read at offset {chunk.offset} from {self.copy.source.uri}", self.src, err
                )
            self._read_done(chunk)
        elif kind == "write":
            chunk, key, view = tag[1], tag[2], tag[3]
            if view is not None:
                # libnbd 1.14's aio_pwrite never drops its reference to the buffer it is
                # given: released, the view no longer pins the slot's mapping.
                view.release()
            if err:
                raise io_failure(
                    f"write at offset {chunk.offset} to {self.copy.target.uri}",
                    self.dsts[key],
                    err,
                )
            chunk.writes -= 1
            if chunk.writes == 0:
                self._confirm(chunk)
        else:
            key = tag[1]
            if err:
                raise io_failure(f"flush of {self.copy.target.uri}", self.dsts[key], err)
            self._planner.flushed(key)

    def _confirm(self, chunk: Chunk) -> None:
        self._active -= 1
        self._planner.confirm(chunk)
        if chunk.slot is not None:
            self._pool.release(chunk)

    def _read_done(self, chunk: Chunk) -> None:
        copy = self.copy
        buffer = chunk.buffer
        if buffer.is_zero():
            copy.hasher.submit(chunk.offset, chunk.length, None)
            chunk.refs = 1
            self._pool.release(chunk)
            chunk.zero_bytes = chunk.length
            if copy.target_is_zero:
                self._confirm(chunk)
            else:
                self._zero(chunk, chunk.offset, chunk.length)
            return
        chunk.refs = 2  # released once hashed and once written
        copy.hasher.submit(
            chunk.offset, chunk.length, chunk.buf, partial(self._pool.release, chunk)
        )
        for start, end, zero in segments(buffer, chunk.length):
            if zero:
                chunk.zero_bytes += end - start
                if not copy.target_is_zero:
                    self._zero(chunk, chunk.offset + start, end - start)
                continue
            chunk.data_bytes += end - start
            key, dst = self._dst()
            chunk.writes += 1
            self._inflight += 1
            view = chunk.buf[start:end]
            dst.aio_pwrite(
                nbd.Buffer.from_buffer(view),
                chunk.offset + start,
                completion=partial(self._cb, ("write", chunk, key, view)),
            )


def segments(buffer: nbd.Buffer, length: int) -> list[tuple[int, int, bool]]:
    """Split a data chunk into runs of zero and non-zero SPARSE_SIZE blocks."""
    runs: list[tuple[int, int, bool]] = []
    start = 0
    current = buffer.is_zero(0, min(SPARSE_SIZE, length))
    for off in range(SPARSE_SIZE, length, SPARSE_SIZE):
        zero = buffer.is_zero(off, min(SPARSE_SIZE, length - off))
        if zero != current:
            runs.append((start, off, current))
            start, current = off, zero
    runs.append((start, length, current))
    return runs
