"""The node API's wire models: what requests must hold and what answers hold."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from sendense_tools.api.fields import ByteCount
from sendense_tools.backup.executor import Phase

# The job id becomes part of the snapshot name and URLs: keep it plain.
JobId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]


class NbdTls(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=255)
    psk: str = Field(min_length=2, max_length=1024)


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


class NodeJob(BaseModel):
    job_id: str
    vm: str
    moref: str
    status: Literal["running", "completed", "failed", "cancelled"]
    phase: Phase | None = Field(description="the backup's current step; null once it ended")
    snapshot: str | None
    error: str | None
    started_at: float
    finished_at: float | None
    disks: list[JobDisk]


class NodeHealth(BaseModel):
    status: Literal["ok"]
    running_backups: int = Field(ge=0)
