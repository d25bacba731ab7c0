"""How long a reader of an NBD export keeps reconnecting after its connection dropped.

A tunnel outage or a restarted qemu-nbd makes every request fail at once; the
copy engine and the restore stream both reconnect with backoff and go on from
where they were, and give up only after `retry_for` seconds without progress.
"""

from __future__ import annotations

import threading
import time

from sendense_tools.nbd.connect import NbdFailure, Stopped

BACKOFF_START = 0.5
BACKOFF_MAX = 5.0


class Reconnects:
    """The retry budget of one transfer: reset by progress, spent by failing time."""

    def __init__(self, retry_for: float, cancelled: threading.Event) -> None:
        self.retry_for = retry_for
        self.cancelled = cancelled
        self.retries = 0
        self._failing_since: float | None = None
        self._delay = BACKOFF_START

    def progressed(self) -> None:
        """Data moved since the last failure: the next outage gets the whole budget."""
        self._failing_since, self._delay = None, BACKOFF_START

    def wait(self, failure: NbdFailure) -> str | None:
        """After `failure`: None once the backoff passed (reconnect now), else why to give up.

        Raises Stopped when cancelled meanwhile.
        """
        if not failure.transient:
            return str(failure)
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        left = self.retry_for - (now - self._failing_since)
        if left <= 0:
            return f"{failure} (gave up after retrying for {self.retry_for:g} s)"
        self.retries += 1
        if self.cancelled.wait(min(self._delay, left)):
            raise Stopped()
        self._delay = min(self._delay * 2, BACKOFF_MAX)
        return None
