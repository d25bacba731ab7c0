"""Hands out a disk's work (all of it, or only given areas) in offset order and tracks what
the target holds durably.

Shared by the copy workers of one disk (one lock). Three positions matter:
- `pos`: next byte not yet handed out;
- the frontier: every byte before it is written (or known zero) on the target;
- `durable`: every byte before it was also flushed. After a reconnect the copy resumes here,
  because a target that was restarted (not only unreachable) loses unflushed writes.
"""

from __future__ import annotations

import bisect
import heapq
import threading
from collections import deque
from dataclasses import dataclass, field

import nbd

from sendense_tools.nbd.extents import window
from sendense_tools.nbd.hasher import OrderedHasher

MAX_ZERO_REQUEST = 64 << 20


@dataclass(eq=False)
class Chunk:
    offset: int
    length: int
    zero: bool  # a known-zero range to write with zero requests
    writes: int = 0  # requests still in flight for this chunk
    data_bytes: int = 0
    zero_bytes: int = 0
    refs: int = 0  # holders of `slot`: the hasher and the write requests
    slot: memoryview | None = field(default=None, repr=False)  # the pool buffer
    buf: memoryview | None = field(default=None, repr=False)  # slot[:length]
    buffer: nbd.Buffer | None = field(default=None, repr=False)  # buf as libnbd sees it


@dataclass
class Counters:
    done: int = 0  # guest bytes (of the areas) confirmed on the target (data + zero)
    data: int = 0  # bytes written as data
    zero: int = 0  # bytes skipped or written as zeroes


@dataclass
class _Checkpoint:
    offset: int
    data: int
    waiting: set[int]  # target connections whose flush has not completed
    issued: set[int] = field(default_factory=set)


class Planner:
    def __init__(
        self,
        size: int,
        hasher: OrderedHasher,
        *,
        request_size: int,
        target_is_zero: bool,
        use_extents: bool,
        flush_keys: set[int],
        checkpoint_bytes: int,
        areas: list[tuple[int, int]] | None = None,
    ) -> None:
        self.size = size
        self._areas = [a for a in (areas if areas is not None else [(0, size)]) if a[1] > 0]
        self._area_starts = [a[0] for a in self._areas]
        self.total = sum(length for _, length in self._areas)
        self._hasher = hasher
        self._request = request_size
        self._target_is_zero = target_is_zero
        self._use_extents = use_extents
        self._flush_keys = flush_keys
        self._checkpoint_bytes = checkpoint_bytes
        self._lock = threading.Lock()
        self.counters = Counters()
        self.durable = 0
        self._durable_data = 0
        self._restart_at(0)

    def _restart_at(self, offset: int) -> None:
        self.pos = offset
        self._extents: deque[tuple[int, int, bool]] = deque()  # (start, length, zero)
        self._outstanding: list[int] = []  # heap of chunk offsets handed out
        self._finished: dict[int, int] = {}  # offset -> data bytes, confirmed but in the heap
        self._frontier_data = self._durable_data
        self._checkpoint: _Checkpoint | None = None

    def restart(self) -> None:
        """Forget everything after the last flush; the next chunks start at `durable`."""
        with self._lock:
            self._restart_at(self.durable)
            done = self._area_bytes_before(self.durable)
            self.counters = Counters(
                done=done, data=self._durable_data, zero=done - self._durable_data
            )

    def _area_bytes_before(self, offset: int) -> int:
        return sum(max(0, min(length, offset - start)) for start, length in self._areas)

    # -- handing out work -------------------------------------------------------------

    def next_chunk(self, src: nbd.NBD) -> Chunk | None:
        """The next range to read (or zero), or None when everything is handed out."""
        with self._lock:
            while self.pos < self.size:
                if not self._extents:
                    self._map(src)
                    if not self._extents:
                        continue  # moved on to the next area, or past the last
                start, length, zero = self._extents[0]
                if zero and self._target_is_zero:
                    self._extents.popleft()
                    self._hasher.submit(start, length, None)
                    self.pos = start + length
                    self.counters.done += length
                    self.counters.zero += length
                    continue
                limit = MAX_ZERO_REQUEST if zero else self._request - start % self._request
                take = min(length, limit)
                if take == length:
                    self._extents.popleft()
                else:
                    self._extents[0] = (start + take, length - take, zero)
                self.pos = start + take
                heapq.heappush(self._outstanding, start)
                return Chunk(start, take, zero)
            self._maybe_checkpoint()
            return None

    def _window(self) -> int:
        """Bytes of the area at `pos` from `pos` on; first moves `pos` to the next area's start
        (or to `size` past the last) when it lies between areas."""
        i = bisect.bisect_right(self._area_starts, self.pos) - 1
        if i >= 0 and self.pos < self._areas[i][0] + self._areas[i][1]:
            return self._areas[i][0] + self._areas[i][1] - self.pos
        self.pos = self._areas[i + 1][0] if i + 1 < len(self._areas) else self.size
        return 0

    def _map(self, src: nbd.NBD) -> None:
        """Extents of the next window. Runs on a worker's source handle; completion callbacks of
        that worker fire inside and only record results, so this re-entry is harmless."""
        count = self._window()
        if count == 0:
            return
        if not self._use_extents:
            self._extents.append((self.pos, count, False))
            return
        self._extents.extend(window(src, self.pos, count))

    # -- completions --------------------------------------------------------------------

    def confirm(self, chunk: Chunk) -> None:
        """The chunk is on the target (written, zeroed, or found zero and skipped)."""
        with self._lock:
            self.counters.done += chunk.length
            self.counters.data += chunk.data_bytes
            self.counters.zero += chunk.zero_bytes
            self._finished[chunk.offset] = chunk.data_bytes
            heap = self._outstanding
            while heap and heap[0] in self._finished:
                self._frontier_data += self._finished.pop(heapq.heappop(heap))
            self._maybe_checkpoint()

    def frontier(self) -> int:
        return self._outstanding[0] if self._outstanding else self.pos

    def _maybe_checkpoint(self) -> None:
        if self._checkpoint is not None:
            return
        frontier = self.frontier()
        if frontier <= self.durable:
            return
        if frontier == self.size or (
            self._frontier_data - self._durable_data >= self._checkpoint_bytes
        ):
            self._checkpoint = _Checkpoint(frontier, self._frontier_data, set(self._flush_keys))

    def flushes_for(self, keys: list[int]) -> list[int]:
        """Target connections of the caller that must send a flush now."""
        with self._lock:
            cp = self._checkpoint
            if cp is None:
                return []
            todo = [k for k in keys if k in cp.waiting and k not in cp.issued]
            cp.issued.update(todo)
            return todo

    def flushed(self, key: int) -> None:
        with self._lock:
            cp = self._checkpoint
            if cp is None:
                return
            cp.waiting.discard(key)
            if not cp.waiting:
                self.durable, self._durable_data = cp.offset, cp.data
                self._checkpoint = None
                self._maybe_checkpoint()

    def finished(self) -> bool:
        return self.durable >= self.size

    def snapshot(self) -> Counters:
        with self._lock:
            return Counters(self.counters.done, self.counters.data, self.counters.zero)
