"""The hub API's restore models: the request, the node's reports and the record."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from sendense_tools.api.fields import ByteCount
from sendense_tools.hub.schemas import Checksum, Request, Status

Phase = Literal[
    "connecting", "creating_vm", "writing", "attaching", "verifying", "powering_on", "cleaning_up"
]
Place = str | None
Warning = Annotated[str, StringConstraints(max_length=4096)]


class RestoreRequest(Request):
    name: str = Field(min_length=1, max_length=80, description="the new VM's name")
    datastore: Place = Field(
        default=None, min_length=1, max_length=255, description="null: the source VM's"
    )
    folder: Place = Field(
        default=None, min_length=1, max_length=1024, description="null: the source VM's"
    )
    resource_pool: Place = Field(
        default=None, min_length=1, max_length=1024, description="null: the source VM's"
    )
    power_on: bool = False


class RestoreDiskReport(Request):
    disk_id: str = Field(min_length=1, max_length=128)
    bytes_written: ByteCount
    bytes_total: ByteCount
    checksum: Checksum | None = Field(default=None, description="the node's read-back")
    verified: bool | None = None


class RestoreReport(Request):
    """The node's progress or final report of a restore."""

    status: Literal["running", "completed", "failed", "cancelled"]
    phase: Phase | None = None
    moref: str | None = Field(default=None, max_length=255)
    error: str | None = Field(default=None, max_length=65536)
    warnings: list[Warning] = Field(default=[], max_length=1024)
    disks: list[RestoreDiskReport] = Field(default=[], max_length=1024)


class RestoreListQuery(BaseModel):
    node: str | None = Field(default=None, min_length=1, max_length=128)
    status: Status | None = None
    backup: str | None = Field(default=None, min_length=1, max_length=255)
    limit: int = Field(default=100, ge=1, le=10000)


class RestoreDisk(BaseModel):
    disk_id: str
    capacity: int
    bytes_written: int
    bytes_total: int
    expected_checksum: dict | None = Field(description="the point's checksum")
    checksum: dict | None = Field(description="the node's read-back of the written disk")
    verified: bool | None = Field(description="the hub's comparison of the two")


class RestoreRecord(BaseModel):
    id: str
    backup_id: str
    node: str
    vm: str = Field(description="the source VM")
    name: str = Field(description="the new VM")
    status: Status
    phase: str | None
    datastore: str | None
    folder: str | None
    resource_pool: str | None
    power_on: bool
    moref: str | None = Field(description="the new VM, once created")
    created_at: str
    finished_at: str | None
    error: str | None
    warnings: list[str]
    disks: list[RestoreDisk]
