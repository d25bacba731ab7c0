"""Seed a lab VM with more disks than one SCSI controller holds (run on the lab vCenter).

`python wide_seed.py URL THUMBPRINT VM COUNT SIZE` prints the seed record
({"vm", "disks"}) like `sendense_tools.lab seed --json`. The lab's seed puts
every disk on the VM's first controller (15 at most); this adds controllers
first and spreads the disks over them, then fills them with the lab's pattern.
"""

from __future__ import annotations

import json
import sys

from pyVmomi import vim

from sendense_tools.lab import seed as lab_seed
from sendense_tools.lab.cli import connect
from sendense_tools.vsphere.props import read_props, wait_task

PER_CONTROLLER = 15  # SCSI unit 7 is the controller itself


def _devices(session, vm) -> list:
    return read_props(session, vm, ["config.hardware.device"])["config.hardware.device"]


def _reconfigure(session, vm, changes: list, what: str) -> None:
    task = session.call(vm.ReconfigVM_Task, vim.vm.ConfigSpec(deviceChange=changes))
    wait_task(session, task, what)


def replace_disks(session, vm, sizes: list[int]) -> None:
    devices = _devices(session, vm)
    _reconfigure(
        session, vm,
        [vim.vm.device.VirtualDeviceSpec(operation="remove", fileOperation="destroy", device=d)
         for d in devices if isinstance(d, vim.vm.device.VirtualDisk)],
        "remove disks",
    )  # fmt: skip
    controllers = [d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)]
    buses = {c.busNumber for c in controllers}
    wanted = -(-len(sizes) // PER_CONTROLLER)
    new = [b for b in range(64) if b not in buses][: max(0, wanted - len(controllers))]
    if new:
        _reconfigure(
            session, vm,
            [vim.vm.device.VirtualDeviceSpec(
                operation="add",
                device=vim.vm.device.ParaVirtualSCSIController(
                    key=-(100 + bus), busNumber=bus, sharedBus="noSharing"
                ),
            ) for bus in new],
            "add controllers",
        )  # fmt: skip
        controllers = [
            d for d in _devices(session, vm) if isinstance(d, vim.vm.device.VirtualSCSIController)
        ]
    places = [(c.key, u) for c in controllers for u in range(16) if u != 7]
    changes = []
    for n, (size, (ctl, unit)) in enumerate(zip(sizes, places, strict=False)):
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            diskMode="persistent", thinProvisioned=True, fileName=""
        )
        disk = vim.vm.device.VirtualDisk(
            key=-(n + 1), controllerKey=ctl, unitNumber=unit,
            capacityInBytes=size, capacityInKB=size // 1024, backing=backing,
        )  # fmt: skip
        changes.append(
            vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk)
        )
    _reconfigure(session, vm, changes, "add disks")


def main() -> None:
    url, thumbprint, vm_name, count, size = sys.argv[1:6]
    lab_seed.replace_disks = replace_disks
    session = connect(url, "user", "pass", None, thumbprint=thumbprint, insecure=not thumbprint)
    try:
        sizes = [lab_seed.parse_size(size)] * int(count)
        disks = lab_seed.seed_vm(session, vm_name, sizes)
    finally:
        session.close()
    print(json.dumps({"vm": vm_name, "disks": lab_seed.seeded_as_dicts(disks)}))


if __name__ == "__main__":
    main()
