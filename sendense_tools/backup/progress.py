"""Rich progress bars per disk and the summary table (on stderr / stdout)."""

from __future__ import annotations

import sys
from typing import Any

import click
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
    """One bar per disk; `update` is safe to call often (rich throttles redraws).

    Without a terminal the bars are off; with `lines`, progress is then printed as plain
    lines on stdout instead (a disk's line at every tenth of it, and each phase once).
    """

    LINE_STEPS = 10

    def __init__(self, enabled: bool, lines: bool = False) -> None:
        tty = sys.stderr.isatty()
        self.enabled = enabled and tty
        self._lines = enabled and lines and not tty
        self._steps: dict[str, int] = {}
        self._phase: str | None = None
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
        if self._lines:
            step = min(done * self.LINE_STEPS // total, self.LINE_STEPS) if total > 0 else 0
            if self._steps.get(disk_id) != step:
                self._steps[disk_id] = step
                percent = 100 * done // total if total > 0 else 0
                click.echo(f"{disk_id}: {done:,} of {total:,} bytes ({percent}%)")

    def phase(self, phase: str | None) -> None:
        """Say once that the job entered `phase` (above the bars, or as a line)."""
        if phase is None or phase == self._phase:
            return
        self._phase = phase
        if self.enabled:
            self._progress.console.print(f"phase: {phase}")
        elif self._lines:
            click.echo(f"phase: {phase}")


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
