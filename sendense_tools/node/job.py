"""One backup job on this node: its state, its reports to the hub, its record in the spool."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DiskState:
    disk_id: str
    bytes_total: int
    bytes_copied: int = 0
    sha256: str | None = None
    change_id: str | None = None
    checksum: dict[str, Any] | None = None
    changes: dict[str, Any] | None = None
    areas: list[tuple[int, int]] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "disk_id": self.disk_id,
            "bytes_copied": self.bytes_copied,
            "bytes_total": self.bytes_total,
            "sha256": self.sha256,
            "change_id": self.change_id,
            "checksum": self.checksum,
            "changes": self.changes,
            "areas": [list(a) for a in self.areas] if self.areas is not None else None,
        }

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> DiskState:
        # Records spooled before incrementals existed lack the newer fields.
        areas = d.get("areas")
        return cls(
            d["disk_id"], d["bytes_total"], d["bytes_copied"], d["sha256"],
            d.get("change_id"), d.get("checksum"), d.get("changes"),
            [(int(o), int(n)) for o, n in areas] if areas is not None else None,
        )  # fmt: skip


@dataclass(kw_only=True)
class NodeJob:
    """What every job on this node has (backups here, restores in node/restore_job.py)."""

    status: str = "running"  # running | completed | failed | cancelled
    # The executor's step (backup/executor.py Phase, restore/plan.py RestorePhase) while
    # running; None once ended.
    phase: str | None = "connecting"
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Why the job was stopped from outside (the error its cancelled record shows).
    stop_reason: str = "cancelled"

    def stop(self, reason: str = "cancelled") -> None:
        """Cancel a running job: its clean-up runs (a backup's snapshot is removed, what a
        restore made is removed), it ends `cancelled`."""
        if self.status == "running" and self.task is not None and not self.cancel.is_set():
            self.stop_reason = reason
            self.cancel.set()
            self.task.cancel()


@dataclass
class Job(NodeJob):
    job_id: str
    vm: str
    moref: str
    disks: dict[str, DiskState]
    snapshot: str | None = None
    mode: str | None = None  # full | incremental, once decided
    mode_reason: str | None = None
    # The VM's hardware as the snapshot saw it, once read (null when it could not be).
    hardware: dict[str, Any] | None = None

    def hub_report(self) -> dict[str, Any]:
        """The body of PUT /api/v1/backups/{id}/progress."""
        status = "failed" if self.status == "cancelled" else self.status
        return {
            "status": status,
            "snapshot": self.snapshot,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "error": self.error,
            "disks": [d.as_dict() for d in self.disks.values()],
            "hardware": self.hardware,
        }

    def as_dict(self) -> dict[str, Any]:
        """GET /api/v1/backup/{id}, and the job's record in the spool."""
        return {
            "job_id": self.job_id,
            "vm": self.vm,
            "moref": self.moref,
            "status": self.status,
            "phase": self.phase,
            "snapshot": self.snapshot,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "disks": self.hub_report()["disks"],
            "hardware": self.hardware,
        }

    def as_record(self) -> dict[str, Any]:
        """The job's record in the spool: what GET shows."""
        return self.as_dict()

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Job:
        """A job as an earlier run of the node recorded it (no task: it is not running here)."""
        disks = {d["disk_id"]: DiskState.from_record(d) for d in record["disks"]}
        return cls(
            record["job_id"],
            record["vm"],
            record["moref"],
            disks,
            status=record["status"],
            phase=record.get("phase"),
            snapshot=record.get("snapshot"),
            mode=record.get("mode"),
            mode_reason=record.get("mode_reason"),
            error=record.get("error"),
            started_at=record["started_at"],
            finished_at=record.get("finished_at"),
            hardware=record.get("hardware"),
        )
