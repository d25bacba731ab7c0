"""SHA-256 of a disk's guest content fed by chunks that finish out of order."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

_ZEROS = memoryview(bytes(4 << 20))


class OrderedHasher:
    """Hashes [0, size) in offset order on its own thread.

    Chunks arrive from copy workers in any order; each waits in `_pending` until every byte
    before it has been hashed. hashlib releases the GIL on large updates, so hashing overlaps
    the copy. Zero ranges are hashed from a shared zero buffer without any data held.
    The caller bounds memory: it only reads ahead as far as its buffer pool allows.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.pos = 0
        self._hash = hashlib.sha256()
        self._pending: dict[int, tuple[int, memoryview | None, Callable[[], None] | None]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

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
            if end <= self.pos:  # already hashed (a chunk re-read after a reconnect)
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

    def hexdigest(self) -> str:
        self.wait_for(self.size)
        return self._hash.hexdigest()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        self.reset_pending()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while self.pos not in self._pending and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    length, data, done = self._pending.pop(self.pos)
                if data is None:
                    left = length
                    while left:
                        n = min(left, len(_ZEROS))
                        self._hash.update(_ZEROS[:n])
                        left -= n
                else:
                    self._hash.update(data)
                if done:
                    done()
                with self._cond:
                    self.pos += length
                    self._cond.notify_all()
        except BaseException as e:  # surfaced to waiters instead of dying silently
            with self._cond:
                self._error = e
                self._cond.notify_all()
