"""Digests of a disk's content fed by chunks that finish out of order.

`OrderedHasher` puts chunks back in offset order on its own thread and feeds them to its
sinks: SHA-256 of the whole disk, the block digests of the DESIGN's checksum
(`blkhash.StreamDigests`), the digest of an incremental's changed areas (`ChangesSink`).
"""

from __future__ import annotations

import bisect
import hashlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sendense_tools.nbd.blkhash import DIGEST_SIZE

_ZEROS = memoryview(bytes(4 << 20))


class Sink(Protocol):
    def start_area(self, offset: int, length: int) -> None: ...

    def update(self, data: memoryview | None, length: int) -> None:
        """The next `length` bytes: `data`, or zeroes when None."""

    def close(self) -> None: ...


def feed_zeros(update: Callable[[memoryview], object], length: int) -> None:
    """Feed `length` zero bytes to a hash's update without allocating them."""
    while length > 0:
        n = min(length, len(_ZEROS))
        update(_ZEROS[:n])
        length -= n


class _HashSink:
    """A hashlib object fed in offset order, zero runs included."""

    def __init__(self, hash_object: Any) -> None:
        self._hash = hash_object

    def start_area(self, offset: int, length: int) -> None:
        pass

    def update(self, data: memoryview | None, length: int) -> None:
        if data is None:
            feed_zeros(self._hash.update, length)
        else:
            self._hash.update(data)

    def close(self) -> None:
        pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class Sha256Sink(_HashSink):
    """SHA-256 of the whole disk, zeroes included (the records' `sha256`)."""

    def __init__(self) -> None:
        super().__init__(hashlib.sha256())


class ChangesSink(_HashSink):
    """blkhash.changes_digest computed while the areas are copied."""

    def __init__(self) -> None:
        super().__init__(hashlib.blake2b(digest_size=DIGEST_SIZE))

    def start_area(self, offset: int, length: int) -> None:
        self._hash.update(offset.to_bytes(8, "big") + length.to_bytes(8, "big"))


class OrderedHasher:
    """Hashes the `areas` of a disk (all of [0, size) by default) in offset order.

    Chunks arrive from copy workers in any order, never across an area's end; each waits
    in `_pending` until every byte before it has been fed to the sinks. The caller bounds
    memory: it only reads ahead as far as its buffer pool allows.
    """

    def __init__(
        self,
        size: int,
        sinks: Sequence[Sink] = (),
        areas: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        self.size = size
        self.sinks = list(sinks) or [Sha256Sink()]
        self._areas = [a for a in (areas if areas is not None else [(0, size)]) if a[1] > 0]
        self._starts = [a[0] for a in self._areas]
        self._area = -1
        self.pos = 0
        self._pending: dict[int, tuple[int, memoryview | None, Callable[[], None] | None]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        self._next_area()
        self._thread = threading.Thread(target=self._run, name="nbd-hash", daemon=True)
        self._thread.start()

    def _next_area(self) -> None:
        """Move to the next area (or to `size` after the last); called with the lock held
        or before the thread starts."""
        self._area += 1
        if self._area < len(self._areas):
            offset, length = self._areas[self._area]
            self.pos = offset
            for sink in self.sinks:
                sink.start_area(offset, length)
        else:
            self.pos = self.size

    def _area_end(self) -> int:
        offset, length = self._areas[self._area]
        return offset + length

    def submit(
        self,
        offset: int,
        length: int,
        data: memoryview | None,
        done: Callable[[], None] | None = None,
    ) -> None:
        """Queue [offset, offset+length): `data` or zeros when None; `done` runs once hashed
        (or dropped), so the caller can recycle the buffer."""
        with self._cond:
            end = offset + length
            # Already hashed (a chunk re-read after a reconnect), or in no area at all.
            if end <= self.pos or not self._in_areas(offset):
                if done:
                    done()
                return
            if offset < self.pos:
                skip = self.pos - offset
                data = data[skip:] if data is not None else None
                offset, length = self.pos, length - skip
            self._pending[offset] = (length, data, done)
            if offset == self.pos:
                self._cond.notify_all()

    def _in_areas(self, offset: int) -> bool:
        i = bisect.bisect_right(self._starts, offset) - 1
        return i >= 0 and offset < self._areas[i][0] + self._areas[i][1]

    def reset_pending(self) -> None:
        """Drop queued chunks that are not hashed yet (before re-reading after a reconnect)."""
        with self._cond:
            dropped = list(self._pending.values())
            self._pending.clear()
        for _, _, done in dropped:
            if done:
                done()

    def wait_for(self, offset: int, stop: threading.Event | None = None) -> None:
        """Block until everything before `offset` is hashed."""
        with self._cond:
            while self.pos < offset and self._error is None:
                if stop is not None and stop.is_set():
                    return
                self._cond.wait(0.1)
            if self._error is not None:
                raise self._error

    def finish(self) -> None:
        """Block until every area is hashed."""
        self.wait_for(self.size)

    def hexdigest(self) -> str:
        """The first sink's digest once everything is hashed."""
        self.finish()
        return self.sinks[0].hexdigest()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        self.reset_pending()
        for sink in self.sinks:
            sink.close()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while self.pos not in self._pending and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    length, data, done = self._pending.pop(self.pos)
                for sink in self.sinks:
                    sink.update(data, length)
                if done:
                    done()
                with self._cond:
                    self.pos += length
                    if self.pos >= self._area_end():
                        self._next_area()
                    self._cond.notify_all()
        except BaseException as e:  # surfaced to waiters instead of dying silently
            with self._cond:
                self._error = e
                self._cond.notify_all()
