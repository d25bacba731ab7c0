"""Find a VM and describe its disks."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from pyVmomi import vim, vmodl

from sendense_tools.vsphere.connection import VsphereError, VsphereSession
from sendense_tools.vsphere.props import read_props, view_props

MOREF_RE = re.compile(r"^vm-\d+$")
DATASTORE_FILE_RE = re.compile(r"^\[(?P<ds>[^\]]+)\] (?P<path>.+)$")


class VmNotFound(VsphereError):
    pass


@dataclass(frozen=True)
class DiskInfo:
    disk_id: str  # "diskN" by device-key order: stable across snapshot and VM views
    key: int
    label: str
    file: str  # "[datastore] dir/name.vmdk"
    capacity: int  # bytes

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VmInfo:
    name: str
    moref: str
    datacenter: str  # inventory path of the datacenter, as dcPath wants it
    disks: list[DiskInfo]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "moref": self.moref,
            "disks": [d.as_dict() for d in self.disks],
        }


def split_datastore_file(file: str) -> tuple[str, str]:
    """ "[ds] dir/name.vmdk" -> ("ds", "dir/name.vmdk")."""
    m = DATASTORE_FILE_RE.match(file)
    if not m:
        raise VsphereError(f"disk file {file!r} is not '[datastore] path'")
    return m["ds"], m["path"]


def find_vm(session: VsphereSession, name_or_moref: str) -> vim.VirtualMachine:
    """A VM by moref ("vm-123") or by exact name; an ambiguous name is an error."""
    if MOREF_RE.match(name_or_moref):
        vm = vim.VirtualMachine(name_or_moref, session.si._stub)
        try:
            read_props(session, vm, ["name"])
            return vm
        except vmodl.fault.ManagedObjectNotFound:
            # Not a moref we know: it may still be a VM *named* like one.
            pass
    matches = vms_named(session, name_or_moref)
    if not matches:
        raise VmNotFound(f"VM {name_or_moref!r} not found in vCenter")
    if len(matches) > 1:
        ids = ", ".join(m._moId for m in matches)
        raise VsphereError(f"VM name {name_or_moref!r} is ambiguous ({ids}); use the moref")
    return matches[0]


def vms_named(session: VsphereSession, name: str) -> list[vim.VirtualMachine]:
    """Every VM (and template) anywhere in vCenter whose name is exactly `name`."""
    found = view_props(session, session.content.rootFolder, [vim.VirtualMachine], ["name"])
    return [obj for obj, props in found if props.get("name") == name]


def disks_of_devices(devices: list[Any]) -> list[DiskInfo]:
    disks = sorted(
        (d for d in devices or [] if isinstance(d, vim.vm.device.VirtualDisk)),
        key=lambda d: d.key,
    )
    out = []
    for n, d in enumerate(disks):
        capacity = d.capacityInBytes or (d.capacityInKB or 0) * 1024
        label = d.deviceInfo.label if d.deviceInfo else f"disk {d.key}"
        out.append(DiskInfo(f"disk{n}", d.key, label, d.backing.fileName, int(capacity)))
    return out


def path_below_datacenter(session: VsphereSession, obj: Any) -> list[str]:
    """The names from the datacenter's child down to `obj` ("vm", "sub"; "host", "C0", ...)."""
    names = []
    while obj is not None and not isinstance(obj, vim.Datacenter):
        p = read_props(session, obj, ["name", "parent"])
        names.append(p["name"])
        obj = p.get("parent")
    if obj is None:
        raise VsphereError(f"{names[-1] if names else 'object'} is not inside a datacenter")
    return list(reversed(names))


def datacenter_path(session: VsphereSession, entity: Any) -> str:
    """The inventory path below the root folder (dcPath for /folder URLs) of the datacenter
    that holds `entity` (a VM, any other entity, or the datacenter itself)."""
    obj = entity
    while obj is not None and not isinstance(obj, vim.Datacenter):
        obj = read_props(session, obj, ["parent"]).get("parent")
    if obj is None:
        raise VsphereError(f"{entity._moId} is not inside a datacenter")
    names = []
    root = session.content.rootFolder
    while obj is not None and obj != root:
        p = read_props(session, obj, ["name", "parent"])
        names.append(p["name"])
        obj = p.get("parent")
    return "/".join(reversed(names))


def describe_vm(session: VsphereSession, name_or_moref: str) -> VmInfo:
    vm = find_vm(session, name_or_moref)
    p = read_props(session, vm, ["name", "config.hardware.device"])
    return VmInfo(
        name=p["name"],
        moref=vm._moId,
        datacenter=datacenter_path(session, vm),
        disks=disks_of_devices(p.get("config.hardware.device", [])),
    )
