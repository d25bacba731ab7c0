"""The hub API's wire models: what requests must hold and what answers hold."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from sendense_tools.api.fields import ByteCount

Status = Literal["pending", "running", "completed", "failed", "cancelled"]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartRequest(Request):
    vm: str = Field(min_length=1, max_length=255, description="VM name or moref")
    node: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="node id; a node's own token implies it, the admin token must name it",
    )


class DiskProgress(Request):
    disk_id: str = Field(min_length=1, max_length=128)
    bytes_copied: ByteCount
    bytes_total: ByteCount
    sha256: Sha256 | None = None


class ProgressReport(Request):
    status: Literal["running", "completed", "failed"]
    snapshot: str | None = Field(default=None, max_length=1024)
    error: str | None = Field(default=None, max_length=65536)
    disks: list[DiskProgress] = Field(default=[], max_length=1024)


class ListQuery(BaseModel):
    node: str | None = Field(default=None, min_length=1, max_length=128)
    status: Status | None = None
    vm: str | None = Field(default=None, min_length=1, max_length=255)
    limit: int = Field(default=100, ge=1, le=10000)


class DiskResult(BaseModel):
    disk_id: str
    capacity: int
    nbd_port: int | None
    export_name: str | None
    qcow2_path: str | None
    bytes_copied: int
    bytes_total: int
    sha256: str | None = Field(description="SHA-256 of the disk as the node read it")
    sha256_qcow2: str | None = Field(description="SHA-256 of the stored image, at the end")


class BackupRecord(BaseModel):
    id: str
    vm: str
    node: str
    status: Status
    created_at: str
    finished_at: str | None
    error: str | None
    snapshot: str | None
    nbd_targets_string: str
    disk_results: list[DiskResult]


class VerifiedDisk(BaseModel):
    disk_id: str
    qcow2_path: str | None
    recorded_sha256: str | None
    sha256: str | None
    match: bool
    error: str | None


class VerifyResult(BaseModel):
    id: str
    ok: bool
    disks: list[VerifiedDisk]


class Allocation(BaseModel):
    node: str
    port: int = Field(description="the slot (unix layout: <socket_dir>/<node>/<port>.sock)")
    job_id: str
    disk_id: str
    pid: int | None


class PoolUsage(BaseModel):
    total: int
    allocated: int
    available: int
    utilization: float = Field(ge=0, le=1)


class NbdMetrics(PoolUsage):
    qemu_nbd_processes: int
    max_exports: int
    nodes: dict[str, PoolUsage] = Field(description="each node's own slot pool")


class Health(BaseModel):
    status: Literal["ok"]
