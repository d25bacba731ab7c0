"""Change a lab VM's disks between two backups: the writes an incremental must carry.

Each disk gets new data in its middle, data turned to zeroes at its start (the
seed's first region is always data) and, when the disk is big enough, a write
across a 4 MiB checksum block border. The writes go straight into the
simulator's datastore directory, where its change tracking sees them at the
next snapshot.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from sendense_tools.lab.seed import local_datastore_dir
from sendense_tools.vsphere.connection import VsphereError, VsphereSession
from sendense_tools.vsphere.inventory import disks_of_devices, find_vm, split_datastore_file
from sendense_tools.vsphere.props import read_props

GRAIN = 64 * 1024
BLOCK = 4 * 1024 * 1024


@dataclass(frozen=True)
class ChangedDisk:
    disk_id: str
    capacity: int
    changed_bytes: int
    # The whole disk's SHA-256 after the change: what the next point must read as.
    sha256: str


def scattered_writes(capacity: int, seed: str) -> list[tuple[int, bytes]]:
    """(offset, data) of one disk's change, reproducible from `seed`."""
    rng = random.Random(seed)
    middle = capacity // 3 // GRAIN * GRAIN
    writes = [(0, bytes(GRAIN)), (middle, rng.randbytes(GRAIN))]
    if capacity >= BLOCK + 2 * GRAIN:
        writes.append((BLOCK - GRAIN, rng.randbytes(2 * GRAIN)))
    return writes


def sha256_of_disk(path: str, capacity: int) -> str:
    """A flat file read as a disk of `capacity` bytes (a short file ends in zeroes)."""
    h = hashlib.sha256()
    left = capacity
    with open(path, "rb") as f:
        while left:
            chunk = f.read(min(left, 4 << 20))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    while left:
        n = min(left, 4 << 20)
        h.update(bytes(n))
        left -= n
    return h.hexdigest()


def local_disks(session: VsphereSession, vm_name: str) -> Iterator[tuple[Any, str, str]]:
    """Each attached disk of the VM: (the disk, its datastore path, its -flat.vmdk in the
    simulator's local datastore directory). VsphereError when that is not on this machine."""
    vm = find_vm(session, vm_name)
    devices = read_props(session, vm, ["config.hardware.device"])["config.hardware.device"]
    for disk in disks_of_devices(devices):
        ds_name, path = split_datastore_file(disk.file)
        local = local_datastore_dir(session, vm, ds_name)
        if not local:
            raise VsphereError(
                f"datastore {ds_name} of {disk.file} is not on this machine:"
                " run this where the simulator runs"
            )
        yield disk, path, os.path.join(local, path[: -len(".vmdk")] + "-flat.vmdk")


def change_vm(
    session: VsphereSession,
    vm_name: str,
    seed: str = "change",
    writes_for: Callable[[int, str], list[tuple[int, bytes]]] = scattered_writes,
) -> list[ChangedDisk]:
    """Write `writes_for(capacity, seed)` into each disk of the VM, in place."""
    out = []
    for disk, _, flat in local_disks(session, vm_name):
        writes = writes_for(disk.capacity, f"{seed}:{vm_name}:{disk.disk_id}")
        fd = os.open(flat, os.O_WRONLY)
        try:
            for offset, data in writes:
                os.pwrite(fd, data, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        changed = sum(len(data) for _, data in writes)
        digest = sha256_of_disk(flat, disk.capacity)
        out.append(ChangedDisk(disk.disk_id, disk.capacity, changed, digest))
    return out


def changed_as_dicts(disks: list[ChangedDisk]) -> list[dict]:
    return [asdict(d) for d in disks]
