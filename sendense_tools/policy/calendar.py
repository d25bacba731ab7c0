"""systemd's own reading of an OnCalendar expression: valid or not, and how often it fires.

The roles render a policy's schedule into a timer's OnCalendar=, so systemd is
the authority on what it means; asking `systemd-analyze calendar` keeps the CLI,
the node, the hub and the timer in agreement.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from datetime import datetime

_ELAPSE = re.compile(r"^\s*(?:Next elapse|Iter\. #\d+):\s+\S+\s+(\S+ \S+)\s+UTC$", re.M)


class ScheduleError(ValueError):
    """An OnCalendar expression systemd does not accept (one line for a person)."""


def _analyze(expression: str, iterations: int) -> str:
    if not expression.strip() or "\n" in expression:
        raise ScheduleError(f"schedule {expression!r} is not a systemd OnCalendar expression")
    try:
        done = subprocess.run(
            ["systemd-analyze", "calendar", f"--iterations={iterations}", expression],
            capture_output=True,
            text=True,
            timeout=10,
            env={"TZ": "UTC", "LC_ALL": "C", "PATH": "/usr/bin:/bin"},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ScheduleError(f"cannot check schedule {expression!r}: {exc}") from None
    if done.returncode != 0:
        raise ScheduleError(f"schedule {expression!r} is not a systemd OnCalendar expression")
    return done.stdout


def check_schedule(expression: str) -> str:
    """The expression when systemd accepts it; ScheduleError otherwise."""
    _analyze(expression, 1)
    return expression


# Enough elapses of a daily schedule to span a weekend: "Mon..Fri 02:00" waits 3 days.
_ITERATIONS = 9


def interval(expression: str) -> float | None:
    """The longest wait between two of the schedule's next elapses, in seconds (None: it
    fires once at most): how long a VM may go without a backup when every run succeeds."""
    found = _ELAPSE.findall(_analyze(expression, _ITERATIONS))
    times = [datetime.fromisoformat(f"{m}+00:00") for m in found]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    return max(gaps) if gaps else None
