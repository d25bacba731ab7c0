"""Seed a simulator VM with N disks of known content (tests and the lab).

The VM's existing disks are replaced by new ones of the given sizes through
ReconfigVM; each disk's -flat.vmdk then receives a reproducible pattern of
random and zero regions, written straight into the datastore directory when
it is on this machine, or uploaded through the /folder URL otherwise.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from pyVmomi import vim

from sendense_tools.lab.pattern import (
    content_sha256,
    iter_content,
    region_bytes,
    regions,
    write_sparse_file,
)
from sendense_tools.nbd.blkhash import StreamDigests
from sendense_tools.vsphere.connection import VsphereError, VsphereSession
from sendense_tools.vsphere.datastore import folder_url
from sendense_tools.vsphere.devices import controller_type, free_units
from sendense_tools.vsphere.hardware import DEFAULT_MAX_CONTROLLERS
from sendense_tools.vsphere.inventory import (
    datacenter_path,
    disks_of_devices,
    find_vm,
    split_datastore_file,
)
from sendense_tools.vsphere.props import read_props, wait_task
from sendense_tools.vsphere.snapshots import list_snapshots, remove_snapshot
from sendense_tools.vsphere.upload import put_file

SIZE_RE = re.compile(r"^(?P<n>\d+)(?P<unit>[KMGT]?)(?:i?B)?$", re.IGNORECASE)
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True)
class SeededDisk:
    disk_id: str
    key: int
    file: str
    capacity: int
    sha256: str
    checksum: dict  # DESIGN "Checksums" (oVirt imageio's block hash)


def content_checksum(capacity: int, seed: str) -> dict:
    """The block checksum of the content the pattern describes, without a disk read."""
    digests = StreamDigests(capacity)
    try:
        for r in regions(capacity, seed):
            digests.update(memoryview(region_bytes(r, seed)) if r.data else None, r.length)
        return digests.checksum()
    finally:
        digests.close()


def disk_seed(seed: str, vm_name: str, disk_id: str) -> str:
    """The pattern seed of one disk: every disk of every VM gets its own content."""
    return f"{seed}:{vm_name}:{disk_id}"


def parse_size(text: str) -> int:
    m = SIZE_RE.match(text.strip())
    if not m:
        raise ValueError(f"disk size {text!r} is not like 64M, 2G or 1048576")
    size = int(m["n"]) * UNITS[m["unit"].upper()]
    if size <= 0 or size % 1024:
        raise ValueError(f"disk size {text!r} must be a positive multiple of 1 KiB")
    return size


def parse_sizes(text: str) -> list[int]:
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("no disk sizes given")
    return [parse_size(p) for p in parts]


def _scsi_controllers(devices: list) -> list[vim.vm.device.VirtualSCSIController]:
    ctls = [d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)]
    if not ctls:
        raise VsphereError("the VM has no SCSI controller to attach disks to")
    return sorted(ctls, key=lambda c: c.busNumber)


def _added_controllers(
    ctls: list[vim.vm.device.VirtualSCSIController], count: int
) -> list[vim.vm.device.VirtualSCSIController]:
    """New controllers of the first one's type on free buses, `count` disks' worth.

    Their keys are negative, so vCenter assigns the real ones and rewrites the
    disks' controllerKey within the same ReconfigVM.
    """
    per = len(free_units(controller_type(ctls[0]) or "lsilogic"))
    wanted = -(-count // per) - len(ctls)
    buses = [b for b in range(DEFAULT_MAX_CONTROLLERS) if b not in {c.busNumber for c in ctls}]
    if wanted > len(buses):
        raise VsphereError(
            f"{count} disks do not fit: at most {per * DEFAULT_MAX_CONTROLLERS}"
            f" on {DEFAULT_MAX_CONTROLLERS} SCSI controllers"
        )
    return [
        type(ctls[0])(key=-(1000 + bus), busNumber=bus, sharedBus="noSharing")
        for bus in buses[: max(wanted, 0)]
    ]


def replace_disks(session: VsphereSession, vm: vim.VirtualMachine, sizes: list[int]) -> None:
    """Replace every disk of `vm` with thin disks of `sizes`, filling the VM's SCSI
    controllers in bus order and adding controllers (up to 4) when they are full."""
    devices = read_props(session, vm, ["config.hardware.device"])["config.hardware.device"]
    ctls = _scsi_controllers(devices)
    added = _added_controllers(ctls, len(sizes))
    changes = [
        vim.vm.device.VirtualDeviceSpec(operation="remove", fileOperation="destroy", device=d)
        for d in devices
        if isinstance(d, vim.vm.device.VirtualDisk)
    ]
    changes += [vim.vm.device.VirtualDeviceSpec(operation="add", device=c) for c in added]
    places = [
        (c.key, unit)
        for c in [*ctls, *added]
        for unit in free_units(controller_type(c) or "lsilogic")
    ]
    for n, (size, (ctl_key, unit)) in enumerate(zip(sizes, places, strict=False)):
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            diskMode="persistent", thinProvisioned=True, fileName=""
        )
        disk = vim.vm.device.VirtualDisk(
            key=-(n + 1),
            controllerKey=ctl_key,
            unitNumber=unit,
            capacityInBytes=size,
            capacityInKB=size // 1024,
            backing=backing,
        )
        changes.append(
            vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk)
        )
    task = session.call(vm.ReconfigVM_Task, vim.vm.ConfigSpec(deviceChange=changes))
    wait_task(session, task, "add disks")


def local_datastore_dir(session: VsphereSession, vm: vim.VirtualMachine, ds_name: str) -> str:
    """The datastore's directory when it is on this machine, else ""."""
    for ds in read_props(session, vm, ["datastore"]).get("datastore", []):
        p = read_props(session, ds, ["name", "info.url"])
        if p.get("name") == ds_name:
            url = p.get("info.url", "")
            path = urlsplit(url).path if "://" in url else url
            return path if path and os.path.isdir(path) else ""
    return ""


def seed_vm(
    session: VsphereSession,
    vm_name: str,
    sizes: list[int],
    seed: str = "sendense",
    upload: bool = False,
) -> list[SeededDisk]:
    """Give `vm_name` exactly len(sizes) disks filled with the pattern; return their SHA-256s.

    `upload` forces the /folder PUT even when the datastore directory is local.
    """
    vm = find_vm(session, vm_name)
    for snap in list_snapshots(session, vm):
        remove_snapshot(session, snap)
    replace_disks(session, vm, sizes)
    devices = read_props(session, vm, ["config.hardware.device"])["config.hardware.device"]
    disks = disks_of_devices(devices)
    dc = datacenter_path(session, vm)
    out = []
    for disk in disks:
        ds_name, path = split_datastore_file(disk.file)
        pattern = disk_seed(seed, vm_name, disk.disk_id)
        local = "" if upload else local_datastore_dir(session, vm, ds_name)
        if local:
            flat = os.path.join(local, path[: -len(".vmdk")] + "-flat.vmdk")
            digest = write_sparse_file(flat, disk.capacity, pattern)
        else:
            url = folder_url(session.endpoint, dc, disk.file)
            chunks = iter_content(disk.capacity, pattern)
            put_file(session.trust, session.session_cookie(), url, disk.capacity, chunks)
            digest = content_sha256(disk.capacity, pattern)
        checksum = content_checksum(disk.capacity, pattern)
        out.append(SeededDisk(disk.disk_id, disk.key, disk.file, disk.capacity, digest, checksum))
    return out


def seeded_as_dicts(disks: list[SeededDisk]) -> list[dict]:
    return [asdict(d) for d in disks]
