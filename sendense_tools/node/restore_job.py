"""One restore on this node: its state, its reports to the hub, its record in the spool."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sendense_tools.node.job import NodeJob


@dataclass
class RestoreDiskState:
    disk_id: str
    capacity: int
    expected: dict[str, Any]  # the point's checksum
    bytes_written: int = 0
    checksum: dict[str, Any] | None = None  # read back from the datastore
    verified: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "disk_id": self.disk_id,
            "bytes_written": self.bytes_written,
            "bytes_total": self.capacity,
            "checksum": self.checksum,
            "verified": self.verified,
        }

    def as_record(self) -> dict[str, Any]:
        return {**self.as_dict(), "expected_checksum": self.expected}

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> RestoreDiskState:
        return cls(d["disk_id"], d["bytes_total"], d["expected_checksum"], d["bytes_written"],
                   d.get("checksum"), d.get("verified"))  # fmt: skip


@dataclass
class RestoreJob(NodeJob):
    job_id: str
    name: str  # the new VM's
    disks: dict[str, RestoreDiskState]
    # Where the new VM goes, once resolved (node/restores.py): what recovery needs.
    datacenter: str | None = None
    datastore: str | None = None
    power_on: bool = False
    moref: str | None = None
    warnings: list[str] = field(default_factory=list)
    # Every datastore file this restore writes: a crashed run's clean-up deletes them.
    files: list[str] = field(default_factory=list)

    def hub_report(self) -> dict[str, Any]:
        """The body of PUT /api/v1/restores/{id}/progress."""
        return {
            "status": self.status,
            "phase": self.phase,
            "moref": self.moref,
            "error": self.error,
            "warnings": list(self.warnings),
            "disks": [d.as_dict() for d in self.disks.values()],
        }

    def as_dict(self) -> dict[str, Any]:
        """GET /api/v1/restore/{id}."""
        return {
            "job_id": self.job_id,
            "name": self.name,
            "datastore": self.datastore,
            "power_on": self.power_on,
            **self.hub_report(),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

    def as_record(self) -> dict[str, Any]:
        """The restore's record in the spool: what a restarted node needs to clean up."""
        return {
            **self.as_dict(),
            "datacenter": self.datacenter,
            "files": list(self.files),
            "disks": [d.as_record() for d in self.disks.values()],
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RestoreJob:
        disks = {d["disk_id"]: RestoreDiskState.from_record(d) for d in record["disks"]}
        return cls(
            record["job_id"], record["name"], disks,
            datacenter=record.get("datacenter"), datastore=record.get("datastore"),
            power_on=bool(record.get("power_on")), status=record["status"],
            phase=record.get("phase"), moref=record.get("moref"), error=record.get("error"),
            warnings=list(record.get("warnings") or []), files=list(record.get("files") or []),
            started_at=record["started_at"], finished_at=record.get("finished_at"),
        )  # fmt: skip
