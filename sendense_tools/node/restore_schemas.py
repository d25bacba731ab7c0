"""The node API's restore models: POST /api/v1/restore/start and the restore job it shows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from sendense_tools.api.fields import ByteCount
from sendense_tools.api.hardware import Hardware
from sendense_tools.node.schemas import DiskId, JobId, NbdTls

Status = Literal["running", "completed", "failed", "cancelled"]
Phase = Literal[
    "connecting", "creating_vm", "writing", "attaching", "verifying", "powering_on",
    "cleaning_up",
]  # fmt: skip
# What else a name must not hold (it names the VM's files too) vsphere/placement.py checks.
VmName = Annotated[str, StringConstraints(min_length=1, max_length=80)]
Place = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class Checksum(BaseModel):
    algorithm: Literal["blake2b"]
    block_size: int = Field(ge=4096, le=1 << 30)
    checksum: str = Field(pattern=r"^[0-9a-f]{64}$")


class RestoreDiskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    disk_id: DiskId
    capacity: ByteCount
    checksum: Checksum


class RestoreStartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: JobId
    name: VmName
    datastore: Place | None = None
    folder: Place | None = None
    resource_pool: Place | None = None
    power_on: bool = False
    hardware: Hardware
    nbd_sources: str = Field(
        min_length=1,
        max_length=65536,
        description="disk0:nbd://HOST:PORT/EXPORT,...: the point's read-only exports, "
        "only this node's tunnel forwards",
    )
    nbd_tls: NbdTls | None = None
    disks: list[RestoreDiskBody] = Field(min_length=1, max_length=1024)


class RestoreStartAnswer(BaseModel):
    job_id: str
    status: Literal["running"]


class RestoreJobDisk(BaseModel):
    disk_id: str
    bytes_written: int
    bytes_total: int
    checksum: dict[str, Any] | None = Field(description="read back from the datastore")
    verified: bool | None = Field(description="the read-back equals the point's checksum")


class NodeRestore(BaseModel):
    job_id: str
    name: str
    datastore: str | None
    power_on: bool
    status: Status
    phase: Phase | None = Field(description="the restore's current step; null once it ended")
    moref: str | None = Field(description="the new VM, once created")
    error: str | None
    warnings: list[str]
    started_at: float
    finished_at: float | None
    disks: list[RestoreJobDisk]
