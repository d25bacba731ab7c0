"""Rich progress bars per disk and the summary table (on stderr / stdout)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table


def stderr_console() -> Console:
    return Console(stderr=True)


class DiskBars:
    """One bar per disk; `update` is safe to call often (rich throttles redraws)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=stderr_console(),
            disable=not self.enabled,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> DiskBars:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def add(self, disk_id: str, total: int) -> None:
        if disk_id not in self._tasks:
            self._tasks[disk_id] = self._progress.add_task(disk_id, total=total)

    def update(self, disk_id: str, done: int, total: int) -> None:
        if disk_id not in self._tasks:
            self.add(disk_id, total)
        self._progress.update(self._tasks[disk_id], completed=done, total=total)


def mb_per_s(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6 if seconds > 0 else 0.0


def summary_table(disks: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for col in ("disk", "capacity", "bytes copied", "seconds", "MB/s"):
        table.add_column(col, justify="left" if col == "disk" else "right")
    # A hash is checked by copying it: never shorten it with an ellipsis.
    table.add_column("SHA-256", overflow="fold")
    for d in disks:
        table.add_row(
            d["disk_id"],
            f"{d['capacity']:,}",
            f"{d['bytes_copied']:,}",
            f"{d['seconds']:.2f}",
            f"{mb_per_s(d['capacity'], d['seconds']):.1f}",
            d["sha256"],
        )
    return table
