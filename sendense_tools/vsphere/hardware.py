"""The hardware a restore point records: enough to build the VM again (DESIGN "Restore").

`hardware_of` reads it from a VM or, at backup time, from the backup's snapshot (the
devices as the snapshot saw them; where the VM lives comes from the VM, a snapshot has
no location). `default_hardware` stands in for points recorded before hardware was.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from sendense_tools.vsphere.connection import VsphereError, VsphereSession
from sendense_tools.vsphere.devices import controller_type, free_units, nic_type
from sendense_tools.vsphere.inventory import (
    datacenter_path,
    disks_of_devices,
    path_below_datacenter,
    split_datastore_file,
)
from sendense_tools.vsphere.props import read_props

CONFIG_PATHS = [
    "config.hardware.numCPU",
    "config.hardware.numCoresPerSocket",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "config.guestId",
    "config.firmware",
    "config.version",
]

DEFAULT_CONTROLLER_KEY = 1000
DEFAULT_MEMORY_MB = 1024
# Four SCSI buses of 15 disks: more than a VM of the default hardware can hold is refused.
DEFAULT_MAX_CONTROLLERS = 4


def hardware_of(session: VsphereSession, obj: vim.VirtualMachine | vim.vm.Snapshot) -> dict:
    """The contract's hardware dict (every key present, JSON-safe) of a VM or a snapshot."""
    if isinstance(obj, vim.vm.Snapshot):
        vm = read_props(session, obj, ["vm"]).get("vm")
        if vm is None:
            raise VsphereError(f"snapshot {obj._moId} belongs to no VM")
    else:
        vm = obj
    config = read_props(session, obj, CONFIG_PATHS)
    if "config.hardware.device" not in config:
        raise VsphereError(f"{obj._moId} has no configuration (is the VM inaccessible?)")
    devices = config["config.hardware.device"] or []
    return {
        **location_of(session, vm),
        "num_cpus": int(config.get("config.hardware.numCPU") or 1),
        "cores_per_socket": int(config.get("config.hardware.numCoresPerSocket") or 1),
        "memory_mb": int(config.get("config.hardware.memoryMB") or DEFAULT_MEMORY_MB),
        "guest_id": config.get("config.guestId") or "otherGuest",
        "firmware": "efi" if config.get("config.firmware") == "efi" else "bios",
        "version": config.get("config.version") or None,
        "controllers": _controllers(devices),
        "disks": _disks(devices),
        "nics": _nics(session, vm, devices),
    }


def location_of(session: VsphereSession, vm: vim.VirtualMachine) -> dict:
    """Where the VM lives: datacenter path, datastore, folder and pool paths below it."""
    p = read_props(session, vm, ["name", "config.files.vmPathName", "parent", "resourcePool"])
    vmx = p.get("config.files.vmPathName")
    parent, pool = p.get("parent"), p.get("resourcePool")
    return {
        "name": p.get("name", ""),
        "datacenter": datacenter_path(session, vm),
        "datastore": split_datastore_file(vmx)[0] if vmx else None,
        # A vApp's VM has no folder: a restore of it goes to the datacenter's VM folder.
        "folder": "/".join(path_below_datacenter(session, parent)) if parent else None,
        # The first name below the datacenter is its host folder, which the path leaves out.
        "resource_pool": "/".join(path_below_datacenter(session, pool)[1:]) if pool else None,
    }


def _controllers(devices: list[Any]) -> list[dict]:
    out = []
    for d in sorted(devices, key=lambda d: d.key):
        kind = controller_type(d)
        if kind is None:
            continue
        shared = getattr(d, "sharedBus", None)
        out.append(
            {"key": d.key, "type": kind, "bus": int(d.busNumber), "sharing": shared or "noSharing"}
        )
    return out


def _disks(devices: list[Any]) -> list[dict]:
    by_key = {d.key: d for d in devices}
    out = []
    for info in disks_of_devices(devices):
        d = by_key[info.key]
        out.append(
            {
                "disk_id": info.disk_id,
                "capacity": info.capacity,
                "controller_key": int(d.controllerKey),
                "unit": int(d.unitNumber),
                "thin": bool(getattr(d.backing, "thinProvisioned", False)),
                "file": info.file,
            }
        )
    return out


def _nics(session: VsphereSession, vm: vim.VirtualMachine, devices: list[Any]) -> list[dict]:
    out = []
    portgroups: dict[str, str] | None = None
    for d in sorted(devices, key=lambda d: d.key):
        kind = nic_type(d)
        if kind is None:
            continue
        backing = d.backing
        if isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
            if portgroups is None:
                portgroups = _portgroup_names(session, vm)
            network = portgroups.get(backing.port.portgroupKey, backing.port.portgroupKey)
        elif isinstance(backing, vim.vm.device.VirtualEthernetCard.OpaqueNetworkBackingInfo):
            network = backing.opaqueNetworkId
        else:
            network = getattr(backing, "deviceName", "") or ""
        # startConnected, not connected: a powered-off VM's NICs all read disconnected.
        connectable = d.connectable
        connected = bool(connectable.startConnected) if connectable is not None else True
        out.append({"type": kind, "network": network, "connected": connected})
    return out


def _portgroup_names(session: VsphereSession, vm: vim.VirtualMachine) -> dict[str, str]:
    """Distributed port group key -> name, for the networks the VM is on."""
    names = {}
    for net in read_props(session, vm, ["network"]).get("network", []):
        if isinstance(net, vim.dvs.DistributedVirtualPortgroup):
            p = read_props(session, net, ["key", "name"])
            names[p.get("key", "")] = p.get("name", "")
    return names


def default_hardware(disks: list[dict], name: str | None = None) -> dict:
    """Hardware for a point recorded without it, from its disks ({"disk_id", "capacity"}).

    1 CPU, 1024 MiB, otherGuest, bios, no NIC, the disks in order on lsilogic controllers
    (units 0.., a second controller when one is full). datacenter, datastore, folder and
    resource_pool are None: the restore's caller names them, or `resolve_placement` takes
    the first datacenter, its first datastore, its VM folder and its first pool. `name`
    is the source VM's, when the caller knows it.
    """
    units = free_units("lsilogic")
    need = -(-len(disks) // len(units))
    if need > DEFAULT_MAX_CONTROLLERS:
        raise VsphereError(
            f"{len(disks)} disks exceed the {DEFAULT_MAX_CONTROLLERS * len(units)} "
            "that default hardware holds"
        )
    controllers = [
        {"key": DEFAULT_CONTROLLER_KEY + n, "type": "lsilogic", "bus": n, "sharing": "noSharing"}
        for n in range(max(need, 1))
    ]
    placed = []
    for n, disk in enumerate(disks):
        bus, slot = divmod(n, len(units))
        placed.append(
            {
                "disk_id": disk["disk_id"],
                "capacity": int(disk["capacity"]),
                "controller_key": DEFAULT_CONTROLLER_KEY + bus,
                "unit": units[slot],
                "thin": True,
                "file": None,
            }
        )
    return {
        "name": name,
        "datacenter": None,
        "datastore": None,
        "folder": None,
        "resource_pool": None,
        "num_cpus": 1,
        "cores_per_socket": 1,
        "memory_mb": DEFAULT_MEMORY_MB,
        "guest_id": "otherGuest",
        "firmware": "bios",
        "version": None,
        "controllers": controllers,
        "disks": placed,
        "nics": [],
    }
