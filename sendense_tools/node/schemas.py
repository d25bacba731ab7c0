"""The node API's wire models: what requests must hold and what answers hold."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints

from sendense_tools.api.fields import ByteCount
from sendense_tools.backup.executor import Phase
from sendense_tools.backup.mode import PreviousDisk

# The job id becomes part of the snapshot name and URLs: keep it plain.
JobId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]


class NbdTls(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=255)
    psk: str = Field(min_length=2, max_length=1024)


DiskId = Annotated[str, StringConstraints(pattern=r"^disk[0-9]{1,4}$")]
ChangeId = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class PreviousDiskBody(BaseModel):
    """A previous point's disk; capacity and key let the node see a resize or re-key itself."""

    model_config = ConfigDict(extra="forbid")
    change_id: ChangeId
    capacity: ByteCount | None = None
    key: int | None = Field(default=None, ge=0, le=2**31 - 1)


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: JobId
    vm: str = Field(min_length=1, max_length=255, description="VM name or moref")
    nbd_targets: str = Field(
        min_length=1,
        max_length=65536,
        description="disk0:nbd://HOST:PORT/EXPORT,...; only this node's tunnel forwards",
    )
    nbd_tls: NbdTls | None = None
    mode: Literal["auto", "full", "incremental"] = "auto"
    # DESIGN's name; "changed_since" (the CLI's) is taken too.
    change_ids: dict[DiskId, ChangeId | PreviousDiskBody] | None = Field(
        default=None,
        max_length=1024,
        validation_alias=AliasChoices("change_ids", "changed_since"),
        description="the previous completed point's change id per disk; its targets are overlays",
    )

    def previous(self) -> dict[str, PreviousDisk] | None:
        if self.change_ids is None:
            return None
        return {
            disk_id: PreviousDisk(p) if isinstance(p, str) else PreviousDisk(**p.model_dump())
            for disk_id, p in self.change_ids.items()
        }


class StartAnswer(BaseModel):
    job_id: str
    status: Literal["running"]


class DiskDescription(BaseModel):
    disk_id: str
    key: int
    label: str
    file: str
    capacity: ByteCount


class VmDescription(BaseModel):
    name: str
    moref: str
    disks: list[DiskDescription]


class JobDisk(BaseModel):
    disk_id: str
    bytes_copied: int
    bytes_total: int
    sha256: str | None
    change_id: str | None = Field(description="the snapshot's backing.changeId")
    checksum: dict[str, Any] | None = Field(description="blkhash of the whole disk (a full)")
    changes: dict[str, Any] | None = Field(description="digest of an incremental's areas")
    areas: list[tuple[int, int]] | None = Field(description="an incremental's (offset, length)s")


class NodeJob(BaseModel):
    job_id: str
    vm: str
    moref: str
    status: Literal["running", "completed", "failed", "cancelled"]
    phase: Phase | None = Field(description="the backup's current step; null once it ended")
    snapshot: str | None
    mode: Literal["full", "incremental"] | None = Field(description="null until decided")
    mode_reason: str | None = Field(description="why a full")
    error: str | None
    started_at: float
    finished_at: float | None
    disks: list[JobDisk]
    hardware: dict[str, Any] | None = Field(
        default=None, description="the VM's hardware as the snapshot saw it, once read"
    )


class CopyBuffers(BaseModel):
    budget: int = Field(ge=0, description="[backup] memory_budget: bytes all disk copies share")
    in_use: int = Field(ge=0, description="bytes of copy buffers held now")
    peak: int = Field(ge=0, description="the most bytes held at once since the node started")


class NodeHealth(BaseModel):
    status: Literal["ok"]
    running_backups: int = Field(ge=0)
    running_restores: int = Field(ge=0)
    copy_buffers: CopyBuffers
