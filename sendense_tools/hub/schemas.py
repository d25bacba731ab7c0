"""The hub API's wire models: what requests must hold and what answers hold."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from sendense_tools.api.fields import ByteCount
from sendense_tools.api.hardware import Hardware
from sendense_tools.policy.model import NAME_PATTERN

Status = Literal["pending", "running", "completed", "failed", "cancelled"]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]
Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{1,128}$")]
RequestedMode = Literal["auto", "full", "incremental"]
Mode = Literal["full", "incremental"]


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
    mode: RequestedMode = Field(
        default="auto",
        description="auto: an incremental when the node has the evidence, else a full;"
        " incremental: fail instead of falling back to a full",
    )
    policy: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="the node's policy this backup runs for (one of the hub's"
        " [nodes.<id>.policies]); its retention then applies to the VM's points",
    )


class Checksum(Request):
    """A whole disk's checksum in ovirt-imageio's block-hash form."""

    algorithm: Literal["blake2b"]
    block_size: int = Field(gt=0, le=1 << 30)
    checksum: Hex


class Changes(Request):
    """The node's digest of the areas it copied (DESIGN "Checksums")."""

    algorithm: Literal["blake2b"]
    areas: ByteCount
    bytes: ByteCount
    digest: Hex


class DiskProgress(Request):
    disk_id: str = Field(min_length=1, max_length=128)
    bytes_copied: ByteCount
    bytes_total: ByteCount
    sha256: Sha256 | None = None
    change_id: str | None = Field(default=None, max_length=1024)
    checksum: Checksum | None = None
    changes: Changes | None = None
    # An incremental's copied areas, (offset, length) each; the body size bounds the count.
    areas: list[tuple[ByteCount, ByteCount]] | None = Field(default=None, max_length=1 << 20)


class ProgressReport(Request):
    status: Literal["running", "completed", "failed"]
    snapshot: str | None = Field(default=None, max_length=1024)
    hardware: Hardware | None = None
    mode: Mode | None = None
    mode_reason: str | None = Field(default=None, max_length=4096)
    error: str | None = Field(default=None, max_length=65536)
    disks: list[DiskProgress] = Field(default=[], max_length=1024)


def reported_mode(report: dict[str, Any]) -> tuple[str, str | None] | None:
    """The node's (mode, reason) from a report, once it decided."""
    return (report["mode"], report.get("mode_reason")) if report.get("mode") else None


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
    change_id: str | None = Field(description="the snapshot's CBT change id for this disk")
    checksum: dict | None = Field(description="the point's whole-disk checksum (blkhash form)")


class BackupRecord(BaseModel):
    id: str
    vm: str
    node: str
    status: Status
    created_at: str
    finished_at: str | None
    error: str | None
    snapshot: str | None
    mode: Mode | None
    mode_reason: str | None = Field(description="why a full (or why an incremental failed)")
    parent: str | None = Field(description="the backup an incremental's overlays build on")
    policy: str | None = Field(default=None, description="the policy that started it")
    nbd_targets_string: str
    disk_results: list[DiskResult]
    hardware: dict | None = Field(
        default=None, description="the VM's hardware at backup time (null for older points)"
    )


class VerifiedDisk(BaseModel):
    disk_id: str
    qcow2_path: str | None
    recorded_sha256: str | None
    sha256: str | None
    recorded_checksum: dict | None = None
    checksum: dict | None = Field(default=None, description="recomputed from the whole chain")
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
