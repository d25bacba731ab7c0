"""What one restore is asked to do, as the node's API hands it to the executor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sendense_tools.nbd.endpoint import NbdEndpoint

Transport = Literal["https", "vddk"]
# The steps of one restore, in order, as RestoreHooks.on_phase names them.
RestorePhase = Literal[
    "connecting", "creating_vm", "writing", "attaching", "verifying", "powering_on",
    "cleaning_up",
]  # fmt: skip


@dataclass(frozen=True)
class RestoreDisk:
    disk_id: str
    capacity: int
    checksum: dict[str, Any]  # the point's block checksum (DESIGN "Checksums")


@dataclass(frozen=True)
class RestorePlan:
    job_id: str
    name: str
    hardware: dict[str, Any]
    disks: list[RestoreDisk]
    sources: dict[str, NbdEndpoint]  # disk id -> the point's export through the tunnel
    # None: the source VM's, as its hardware recorded it.
    datastore: str | None = None
    folder: str | None = None
    resource_pool: str | None = None
    power_on: bool = False


@dataclass(frozen=True)
class RestoreOptions:
    transport: Transport = "https"
    retry_for: float = 300.0
    connections_per_disk: int = 2
    # vddk only: nbdkit reads the password from this file.
    password_file: str = ""
    vddk_libdir: str = "/opt/vmware-vix-disklib-distrib"
