"""Per-VM and repository figures for /metrics, from the store's rows and the filesystem.

Cheap on purpose (a scrape every 15 s of a hub with thousands of points): one stat
per qcow2 for the bytes it holds, one statvfs for the repository, and systemd's
reading of each distinct schedule at most once an hour; never qemu-img.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

from sendense_tools.policy.calendar import ScheduleError, interval
from sendense_tools.policy.model import Policy

# Slack past a schedule's interval and its random delay before a backup counts as
# late: the backup itself must have time to finish.
BACKUP_SLACK = 3600.0
# The interval between a schedule's next two elapses changes with the date for an
# irregular one (weekdays only), so it is asked again after this many seconds.
INTERVAL_TTL = 3600.0

_intervals: dict[str, tuple[float, float | None]] = {}


@dataclass(frozen=True)
class VmFigures:
    node: str
    vm: str
    # The policy of the VM's newest completed point that has one ("" for none).
    policy: str
    points: int
    last_finished_at: float | None  # unix seconds
    stored_bytes: int
    # Only for a VM governed by a policy this hub has for its node.
    max_age: float | None


@dataclass(frozen=True)
class RepositoryFigures:
    size: int
    used: int
    free: int  # what the hub may still write (df's "Avail")


def unix_time(text: str | None) -> float | None:
    """A stored ISO timestamp as unix seconds (the store writes UTC)."""
    if text is None:
        return None
    when = datetime.fromisoformat(text)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def schedule_interval(expression: str) -> float | None:
    """`interval(expression)`, remembered for INTERVAL_TTL (None: it never repeats, or
    systemd cannot read it now)."""
    cached = _intervals.get(expression)
    clock = time.monotonic()
    if cached is not None and clock - cached[0] < INTERVAL_TTL:
        return cached[1]
    try:
        seconds = interval(expression)
    except ScheduleError:
        seconds = None
    _intervals[expression] = (clock, seconds)
    return seconds


def max_age(policy: Policy) -> float | None:
    """How old a VM's newest completed point may get before its schedule is missed."""
    seconds = schedule_interval(policy.schedule)
    return None if seconds is None else seconds + policy.randomized_delay + BACKUP_SLACK


def allocated_bytes(path: str) -> int:
    """Bytes a file holds on disk (0 for one that is gone)."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


def vm_figures(
    rows: list[dict[str, Any]], policies: dict[str, dict[str, Policy]]
) -> list[VmFigures]:
    """The figures of each VM from `MetricRows.completed_disks` rows (grouped by VM,
    oldest point first); `policies`: the hub's policies per node."""
    figures = []
    for (node, vm), group in groupby(rows, key=lambda r: (r["node"], r["vm"])):
        disks = list(group)
        governing = next((r["policy"] for r in reversed(disks) if r["policy"]), None)
        configured = policies.get(node, {}).get(governing) if governing else None
        figures.append(
            VmFigures(
                node=node,
                vm=vm,
                policy=governing or "",
                points=len({r["id"] for r in disks}),
                last_finished_at=unix_time(disks[-1]["finished_at"]),
                stored_bytes=sum(
                    allocated_bytes(r["qcow2_path"]) for r in disks if r["qcow2_path"]
                ),
                max_age=max_age(configured) if configured else None,
            )
        )
    return figures


def repository_figures(root: str) -> RepositoryFigures | None:
    """The repository filesystem's figures as df shows them (None: it cannot be read)."""
    try:
        st = os.statvfs(root)
    except OSError:
        return None
    return RepositoryFigures(
        size=st.f_blocks * st.f_frsize,
        used=(st.f_blocks - st.f_bfree) * st.f_frsize,
        free=st.f_bavail * st.f_frsize,
    )
