"""The VM's hardware as a backup records it (vsphere/hardware.py reads it): one model,
which the hub's final reports and restores and the node's restore start both take."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from sendense_tools.api.fields import ByteCount

Name = Annotated[str, StringConstraints(max_length=1024)]


class Part(BaseModel):
    """A device of the recorded hardware: extra keys a newer node adds are ignored,
    so that they never turn a backup's final report away."""


class Controller(Part):
    key: int = Field(ge=0, le=1 << 31)
    type: Literal["lsilogic", "lsilogic-sas", "pvscsi", "buslogic", "nvme", "sata", "ide"]
    bus: int = Field(ge=0, le=1024)
    sharing: Name = "noSharing"


class HardwareDisk(Part):
    disk_id: str = Field(min_length=1, max_length=128)
    capacity: ByteCount
    controller_key: int = Field(ge=0, le=1 << 31)
    unit: int = Field(ge=0, le=1024)
    thin: bool = True
    file: Name | None = None


class Nic(Part):
    type: Literal["vmxnet3", "e1000", "e1000e", "pcnet32", "vmxnet2"]
    network: Name | None = None
    connected: bool = True


class Hardware(BaseModel):
    """The VM as its backup's snapshot saw it (DESIGN contract, section 1)."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    datacenter: Name | None
    datastore: Name | None
    folder: Name | None
    resource_pool: Name | None
    num_cpus: int = Field(ge=1, le=4096)
    cores_per_socket: int = Field(ge=1, le=4096)
    memory_mb: int = Field(ge=1, le=1 << 40)
    guest_id: Name
    firmware: Literal["bios", "efi"]
    version: Name | None
    controllers: list[Controller] = Field(max_length=256)
    disks: list[HardwareDisk] = Field(max_length=1024)
    nics: list[Nic] = Field(max_length=256)
