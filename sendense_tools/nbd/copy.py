"""Copy one disk from an NBD source to an NBD target with libnbd.

Layout: W worker threads, each with one source handle and its share of the target handles,
runs its own poll loop with many requests in flight (libnbd releases the GIL around every C
call, so the threads really overlap). A planner hands out ranges in offset order from the
source's base:allocation map (only within `areas` for an incremental); zero ranges are
skipped on a fresh target and written as zeroes on any other (an overlay, whose backing file
would show through a skipped range). Data is hashed in offset order on a separate thread
while it is written: SHA-256 and the block checksum of a full, the changes digest of an areas
copy (see nbd/blkhash.py). Any dropped connection stops the
attempt; the copy reconnects with backoff and resumes from the last flushed position, so a
target that was restarted (and lost unflushed writes) still ends up bit-identical.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import nbd

from sendense_tools.errors import SendenseError
from sendense_tools.nbd.blkhash import StreamDigests
from sendense_tools.nbd.connect import (
    NbdFailure,
    PskFile,
    Stopped,
    close_handle,
    describe,
    io_failure,
    open_handle,
)
from sendense_tools.nbd.endpoint import NbdEndpoint
from sendense_tools.nbd.hasher import ChangesSink, OrderedHasher, Sha256Sink, Sink
from sendense_tools.nbd.planner import Chunk, Planner
from sendense_tools.nbd.retry import Reconnects

REQUEST_SIZE = 256 << 10  # nbdcopy's default; much larger requests measured slower
REQUESTS_PER_WORKER = 32
SPARSE_SIZE = 4096  # zero detection granularity inside data
HASH_BACKLOG = 64 << 20  # data read ahead of the hasher (it lags behind long zero ranges)
CHECKPOINT_BYTES = 512 << 20  # flush this often: the most a restarted target makes us redo
STALL_TIMEOUT = 120.0  # requests in flight and no reply for this long: treat as a dead link
PROGRESS_INTERVAL = 0.2

_IN = select.POLLIN | select.POLLHUP | select.POLLERR


class CopyError(SendenseError):
    """The copy failed; the message is one line naming the disk."""


class CopyCancelled(SendenseError):
    """The copy was cancelled on request."""


@dataclass
class CopyProgress:
    disk_id: str
    bytes_done: int  # guest bytes confirmed on the target (data written + zero ranges)
    bytes_total: int  # the capacity, or the areas' bytes


@dataclass
class CopyResult:
    disk_id: str
    capacity: int
    bytes_copied: int  # data bytes written
    bytes_zero: int  # bytes skipped or written as zeroes
    sha256: str | None  # of the whole guest content (a full)
    seconds: float
    retries: int
    checksum: dict | None = None  # blkhash of the whole disk (a full, or areas [(0, size)])
    changes: dict | None = None  # of the areas copied (an areas copy)


class _BufferPool:
    """Fixed set of request buffers: bounds memory, including data waiting to be hashed."""

    def __init__(self, count: int, size: int) -> None:
        self._free = [memoryview(bytearray(size)) for _ in range(count)]
        self._lock = threading.Lock()

    def get(self) -> memoryview | None:
        with self._lock:
            return self._free.pop() if self._free else None

    def put(self, slot: memoryview) -> None:
        with self._lock:
            self._free.append(slot)

    def release(self, chunk: Chunk) -> None:
        with self._lock:
            chunk.refs -= 1
            if chunk.refs == 0 and chunk.slot is not None:
                self._free.append(chunk.slot)
                chunk.slot = chunk.buf = chunk.buffer = None


class _Worker:
    """One thread: a source handle, some target handles, one poll loop."""

    def __init__(
        self,
        copy: _DiskCopy,
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
        dst.aio_zero(length, offset, completion=partial(self._cb, ("write", chunk, key)))

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
            chunk, key = tag[1], tag[2]
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
            self._pool.put(chunk.slot)
            chunk.slot = chunk.buf = chunk.buffer = None
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
        for start, end, zero in _segments(buffer, chunk.length):
            if zero:
                chunk.zero_bytes += end - start
                if not copy.target_is_zero:
                    self._zero(chunk, chunk.offset + start, end - start)
                continue
            chunk.data_bytes += end - start
            key, dst = self._dst()
            chunk.writes += 1
            self._inflight += 1
            dst.aio_pwrite(
                nbd.Buffer.from_buffer(chunk.buf[start:end]),
                chunk.offset + start,
                completion=partial(self._cb, ("write", chunk, key)),
            )


def _segments(buffer: nbd.Buffer, length: int) -> list[tuple[int, int, bool]]:
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


class _DiskCopy:
    """The synchronous copy of one disk; runs on its own thread, driven by copy_disk()."""

    def __init__(
        self,
        disk_id: str,
        source: NbdEndpoint,
        target: NbdEndpoint,
        *,
        connections: int,
        target_is_zero: bool,
        retry_for: float,
        areas: list[tuple[int, int]] | None,
        sha256: bool,
    ) -> None:
        self.disk_id = disk_id
        self.areas = areas
        self.want_sha256 = sha256
        self.source = source
        self.target = target
        self.connections = connections
        self.target_is_zero = target_is_zero
        self.retry_for = retry_for
        self.requests = REQUESTS_PER_WORKER
        self.cancelled = threading.Event()
        self.stop = threading.Event()
        self.exits: queue.Queue[_Worker] = queue.Queue()
        self.planner: Planner | None = None
        self.hasher: OrderedHasher | None = None
        self._sums: _Sums | None = None
        self.pool: _BufferPool | None = None
        self.src_psk: str | None = None
        self.dst_psk: str | None = None
        self.retries = 0
        self._layout: tuple[int, int, bool] = (1, 1, True)  # workers, target conns, multi-conn

    def cancel(self) -> None:
        self.cancelled.set()
        self.stop.set()

    def run(self) -> CopyResult:
        started = time.monotonic()
        psks = [PskFile(ep.tls) if ep.tls else None for ep in (self.source, self.target)]
        self.src_psk, self.dst_psk = (p.path if p else None for p in psks)
        try:
            self._run_attempts()
            self.hasher.finish()
            sums = self._sums
            counters = self.planner.snapshot()
            return CopyResult(
                disk_id=self.disk_id,
                capacity=self.planner.size,
                bytes_copied=counters.data,
                bytes_zero=counters.zero,
                sha256=sums.sha256.hexdigest() if sums.sha256 else None,
                seconds=time.monotonic() - started,
                retries=self.retries,
                checksum=sums.blocks.checksum() if sums.blocks else None,
                changes=sums.changes_summary(self.areas),
            )
        finally:
            if self.hasher is not None:
                self.hasher.close()
            for p in psks:
                if p is not None:
                    p.remove()

    def _run_attempts(self) -> None:
        reconnects = Reconnects(self.retry_for, self.cancelled)
        while True:
            if self.cancelled.is_set():
                raise Stopped()
            self.stop = threading.Event()
            done_before = self.planner.counters.done if self.planner else 0
            try:
                self._attempt()
                return
            except NbdFailure as f:
                if self.cancelled.is_set():
                    raise Stopped() from None
                gone = self.source.server_gone() if self.source.server_gone else None
                if f.transient and gone is not None:
                    # Reconnecting cannot bring back a source whose server exited.
                    raise CopyError(f"{self.disk_id}: {gone}") from None
                if self.planner is not None and self.planner.counters.done > done_before:
                    reconnects.progressed()
                why = reconnects.wait(f)
                self.retries = reconnects.retries
                if why is not None:
                    raise CopyError(f"{self.disk_id}: {why}") from None

    def _attempt(self) -> None:
        src0 = open_handle(self.source, self.stop, psk_file=self.src_psk, allocation=True)
        try:
            dst0 = open_handle(self.target, self.stop, psk_file=self.dst_psk)
        except BaseException:
            close_handle(src0)
            raise
        try:
            self._prepare(src0, dst0)
        except BaseException:
            close_handle(src0)
            close_handle(dst0)
            raise
        workers_n, targets_n, _ = self._layout
        self.pool = _BufferPool(
            workers_n * self.requests + HASH_BACKLOG // REQUEST_SIZE, REQUEST_SIZE
        )
        workers = [
            _Worker(self, [k for k in range(targets_n) if k % workers_n == w])
            for w in range(workers_n)
        ]
        workers[0].src, workers[0].dsts = src0, {0: dst0}
        for w in workers:
            w.thread.start()
        first_error: BaseException | None = None
        for _ in workers:
            w = self.exits.get()
            w.thread.join()
            if w.error is not None and (first_error is None or isinstance(first_error, Stopped)):
                first_error = w.error
                self.stop.set()
        if first_error is not None:
            raise first_error

    def _prepare(self, src: nbd.NBD, dst: nbd.NBD) -> None:
        size, target_size = src.get_size(), dst.get_size()
        if target_size < size:
            raise NbdFailure(
                f"target {self.target.uri} holds {target_size} bytes, the disk has {size}", False
            )
        if self.planner is None:
            workers_n = self.connections if src.can_multi_conn() else 1
            # A target that does not advertise multi-conn (qemu-nbd --shared=1) may never
            # answer a second connection: that was the seed's hang.
            targets_n = self.connections if dst.can_multi_conn() else 1
            workers_n = min(workers_n, targets_n)
            multi = dst.can_multi_conn()
            self._layout = (workers_n, targets_n, multi)
            self._check_areas(size)
            self._sums = _Sums.for_copy(size, self.areas, self.want_sha256)
            self.hasher = OrderedHasher(size, self._sums.sinks(), self.areas)
            self.planner = Planner(
                size,
                self.hasher,
                request_size=REQUEST_SIZE,
                target_is_zero=self.target_is_zero,
                use_extents=src.can_meta_context("base:allocation"),
                flush_keys={0} if multi else set(range(targets_n)),
                checkpoint_bytes=CHECKPOINT_BYTES,
                areas=self.areas,
            )
            return
        if size != self.planner.size:
            raise NbdFailure(f"source {self.source.uri} changed size to {size}", False)
        # Everything before `durable` was read, so it is (or will be) hashed; what was read
        # after it is read again, and the hasher skips what it already has.
        self.hasher.wait_for(self.planner.durable)
        self.hasher.reset_pending()
        self.planner.restart()

    def _check_areas(self, size: int) -> None:
        if self.areas and self.areas[-1][0] + self.areas[-1][1] > size:
            offset, length = self.areas[-1]
            raise NbdFailure(f"area ({offset}, {length}) ends past the disk's {size} bytes", False)


@dataclass
class _Sums:
    """What one copy hashes: a full, SHA-256 and the block digests; an areas copy, the
    changes digest, and the block digests too when its one area is the whole disk."""

    sha256: Sha256Sink | None
    blocks: StreamDigests | None
    changes: ChangesSink | None

    @classmethod
    def for_copy(cls, size: int, areas: list[tuple[int, int]] | None, sha256: bool) -> _Sums:
        if areas is None:
            return cls(Sha256Sink() if sha256 else None, StreamDigests(size), None)
        whole = areas == [(0, size)]
        return cls(None, StreamDigests(size) if whole else None, ChangesSink())

    def sinks(self) -> list[Sink]:
        return [s for s in (self.sha256, self.blocks, self.changes) if s is not None]

    def changes_summary(self, areas: list[tuple[int, int]] | None) -> dict | None:
        if self.changes is None or areas is None:
            return None
        return {
            "algorithm": "blake2b",
            "areas": len(areas),
            "bytes": sum(length for _, length in areas),
            "digest": self.changes.hexdigest(),
        }


def _valid_areas(areas: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The areas as (offset, length) tuples; ValueError unless sorted and non-overlapping."""
    out: list[tuple[int, int]] = []
    end = 0
    for offset, length in areas:
        if offset < 0 or length < 0:
            raise ValueError(f"area ({offset}, {length}): negative offset or length")
        if offset < end:
            raise ValueError(f"area ({offset}, {length}) overlaps or precedes the one before")
        if length:
            out.append((int(offset), int(length)))
            end = offset + length
    return out


async def copy_disk(
    disk_id: str,
    source: NbdEndpoint,
    target: NbdEndpoint,
    *,
    connections: int = 2,
    on_progress: Callable[[CopyProgress], None] | None = None,
    cancel: asyncio.Event | None = None,
    retry_for: float = 300.0,
    target_is_zero: bool = True,
    areas: list[tuple[int, int]] | None = None,
    sha256: bool = True,
) -> CopyResult:
    """Copy the guest content of `source` to `target` (all of it, or only `areas`: sorted,
    non-overlapping (offset, length) pairs); see the module docstring. `sha256=False` spares a
    full the serial SHA-256 of every byte, zeroes included (the block checksum stays): for
    when the records no longer carry it."""
    if connections < 1:
        raise ValueError(f"connections: {connections} (must be at least 1)")
    if areas is not None:
        areas = _valid_areas(areas)
    job = _DiskCopy(
        disk_id,
        source,
        target,
        connections=connections,
        target_is_zero=target_is_zero,
        retry_for=retry_for,
        areas=areas,
        sha256=sha256,
    )
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[CopyResult] = loop.create_future()

    def run() -> None:
        try:
            result: CopyResult | BaseException = job.run()
        except BaseException as e:
            result = e
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(_settle, finished, result)

    thread = threading.Thread(target=run, name=f"nbd-copy-{disk_id}")
    thread.start()
    reporter = asyncio.create_task(_report(job, disk_id, on_progress)) if on_progress else None
    cancel_wait = asyncio.create_task(cancel.wait()) if cancel is not None else None
    try:
        waiting = {finished} | ({cancel_wait} if cancel_wait else set())
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not finished.done():
            job.cancel()
        result = await asyncio.shield(finished)
    except asyncio.CancelledError:
        job.cancel()
        with contextlib.suppress(BaseException):
            await finished
        raise
    except Stopped:
        raise CopyCancelled(f"{disk_id}: copy cancelled") from None
    finally:
        for task in (reporter, cancel_wait):
            if task is not None:
                task.cancel()
        if finished.done():  # settling the future is the thread's last act: this is a moment
            thread.join()
    if on_progress is not None:
        total = job.planner.total
        on_progress(CopyProgress(disk_id, total, total))
    return result


def _settle(future: asyncio.Future, result: CopyResult | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


async def _report(
    job: _DiskCopy, disk_id: str, on_progress: Callable[[CopyProgress], None]
) -> None:
    last = -1
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL)
        if job.planner is None:
            continue
        done = job.planner.counters.done
        if done != last:
            last = done
            on_progress(CopyProgress(disk_id, done, job.planner.total))
