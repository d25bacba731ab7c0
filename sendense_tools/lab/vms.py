"""The lab's VMs as the demo handles a restored one: what its disk files hold, read
where the simulator keeps them, and removing it so that the next demo can restore
under the same name."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from sendense_tools.lab.change import local_disks, sha256_of_disk
from sendense_tools.vsphere.connection import VsphereSession
from sendense_tools.vsphere.inventory import (
    VmNotFound,
    find_vm,
)
from sendense_tools.vsphere.props import read_props, wait_task

# A restored VM's disk files are named after the disk ids of its restore point.
RESTORED_DISK_RE = re.compile(r"_(?P<disk_id>disk\d+)\.vmdk$")


@dataclass(frozen=True)
class DiskFile:
    disk_id: str
    file: str  # "[datastore] dir/name.vmdk", as the VM has it attached
    capacity: int
    sha256: str  # of the -flat.vmdk as a disk of `capacity` bytes


def disk_files(session: VsphereSession, vm_name: str) -> list[DiskFile]:
    """Each attached disk of the VM, hashed from the simulator's datastore directory."""
    out = []
    for disk, path, flat in local_disks(session, vm_name):
        named = RESTORED_DISK_RE.search(path)
        digest = sha256_of_disk(flat, disk.capacity)
        out.append(
            DiskFile(named["disk_id"] if named else disk.disk_id, disk.file, disk.capacity, digest)
        )
    return out


def files_as_dicts(disks: list[DiskFile]) -> list[dict]:
    return [asdict(d) for d in disks]


def destroy_vm(session: VsphereSession, vm_name: str) -> bool:
    """Remove the VM and its files (powering it off first); False when there is none."""
    try:
        vm = find_vm(session, vm_name)
    except VmNotFound:
        return False
    state = read_props(session, vm, ["runtime.powerState"]).get("runtime.powerState")
    if state == "poweredOn":  # vCenter destroys only a VM that is off
        wait_task(session, session.call(vm.PowerOffVM_Task), f"power off VM {vm_name}")
    wait_task(session, session.call(vm.Destroy_Task), f"destroy VM {vm_name}")
    return True
