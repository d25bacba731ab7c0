"""How a child process ended, in words for a log line or an error."""

from __future__ import annotations

import signal


def describe_exit(rc: int | None) -> str:
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"killed by {name} (status {rc})"
    return f"exit status {rc}"
