"""hardware_of against the simulator: every value checked against what pyvmomi reads itself."""

from __future__ import annotations

import json

import pytest
from pyVmomi import vim

from sendense_tools.vsphere.hardware import default_hardware, hardware_of
from sendense_tools.vsphere.inventory import find_vm
from sendense_tools.vsphere.props import wait_task
from sendense_tools.vsphere.snapshots import create_snapshot, remove_snapshot

D = vim.vm.device
KEYS = {
    "name", "datacenter", "datastore", "folder", "resource_pool", "num_cpus",
    "cores_per_socket", "memory_mb", "guest_id", "firmware", "version", "controllers",
    "disks", "nics",
}  # fmt: skip


def reconfigure(session, vm, **spec) -> None:
    task = session.call(vm.ReconfigVM_Task, vim.vm.ConfigSpec(**spec))
    wait_task(session, task, "reconfigure the test VM")


@pytest.fixture
def lab_vm(vcsim, session):
    """The seeded VM with hardware unlike the simulator's defaults, restored afterwards."""
    vm = find_vm(session, vcsim.vm)
    before = vm.config
    reconfigure(
        session, vm, numCPUs=4, numCoresPerSocket=2, memoryMB=512, guestId="ubuntu64Guest",
        firmware="efi",
    )  # fmt: skip
    yield vm
    reconfigure(
        session, vm, numCPUs=before.hardware.numCPU,
        numCoresPerSocket=before.hardware.numCoresPerSocket,
        memoryMB=before.hardware.memoryMB, guestId=before.guestId, firmware=before.firmware,
    )  # fmt: skip


def path_below_dc(obj) -> list[str]:
    names = []
    while not isinstance(obj, vim.Datacenter):
        names.append(obj.name)
        obj = obj.parent
    return list(reversed(names))


def expected_from_pyvmomi(vm, config) -> dict:
    """The hardware dict, read attribute by attribute through pyvmomi's own objects."""
    devices = config.hardware.device
    disks = sorted((d for d in devices if isinstance(d, D.VirtualDisk)), key=lambda d: d.key)
    storage = D.VirtualSCSIController | D.VirtualIDEController | D.VirtualSATAController
    ctls = [d for d in devices if isinstance(d, storage | D.VirtualNVMEController)]
    nics = [d for d in devices if isinstance(d, D.VirtualEthernetCard)]
    pg_names = {
        n.key: n.name for n in vm.network if isinstance(n, vim.dvs.DistributedVirtualPortgroup)
    }
    dc = vm.parent
    while not isinstance(dc, vim.Datacenter):
        dc = dc.parent
    return {
        "name": vm.name,
        "datacenter": dc.name,
        "datastore": vm.config.files.vmPathName.split("]")[0].lstrip("["),
        "folder": "/".join(path_below_dc(vm.parent)),
        "resource_pool": "/".join(path_below_dc(vm.resourcePool)[1:]),
        "num_cpus": config.hardware.numCPU,
        "cores_per_socket": config.hardware.numCoresPerSocket,
        "memory_mb": config.hardware.memoryMB,
        "guest_id": config.guestId,
        "firmware": config.firmware,
        "version": config.version,
        "controllers": sorted([(c.key, c.busNumber) for c in ctls]),
        "disks": [
            (f"disk{n}", d.capacityInBytes, d.controllerKey, d.unitNumber, d.backing.fileName)
            for n, d in enumerate(disks)
        ],
        "nics": [pg_names.get(getattr(n.backing, "port", None) and n.backing.port.portgroupKey)
                 or getattr(n.backing, "deviceName", None) for n in nics],
    }  # fmt: skip


def comparable(hw: dict) -> dict:
    out = dict(hw)
    out["controllers"] = sorted((c["key"], c["bus"]) for c in hw["controllers"])
    out["disks"] = [
        (d["disk_id"], d["capacity"], d["controller_key"], d["unit"], d["file"])
        for d in hw["disks"]
    ]
    out["nics"] = [n["network"] for n in hw["nics"]]
    return out


def test_hardware_of_the_vm_is_what_pyvmomi_reads(session, lab_vm):
    hw = hardware_of(session, lab_vm)
    assert set(hw) == KEYS
    assert json.loads(json.dumps(hw)) == hw  # JSON-safe, as the node sends it
    assert comparable(hw) == expected_from_pyvmomi(lab_vm, lab_vm.config)
    # The reconfigured values, not the simulator's defaults, came through.
    assert (hw["num_cpus"], hw["cores_per_socket"], hw["memory_mb"]) == (4, 2, 512)
    assert (hw["guest_id"], hw["firmware"]) == ("ubuntu64Guest", "efi")
    by_key = {d.key: d for d in lab_vm.config.hardware.device}
    for c in hw["controllers"]:
        assert isinstance(by_key[c["key"]], D.VirtualController)
    assert {c["type"] for c in hw["controllers"]} >= {"ide"}
    assert len(hw["disks"]) == 3 and len(hw["nics"]) >= 1


def test_hardware_of_the_snapshot_is_as_the_snapshot_saw_it(session, lab_vm):
    snap = create_snapshot(session, lab_vm, "sendense-hw-test")
    try:
        reconfigure(session, lab_vm, memoryMB=768, numCPUs=1, numCoresPerSocket=1)
        of_snap = hardware_of(session, snap.obj)
        of_vm = hardware_of(session, lab_vm)
        assert comparable(of_snap) == expected_from_pyvmomi(lab_vm, snap.obj.config)
        assert (of_snap["memory_mb"], of_snap["num_cpus"]) == (512, 4)
        assert (of_vm["memory_mb"], of_vm["num_cpus"]) == (768, 1)
        # Where the VM lives is the VM's, also for its snapshot.
        for key in ("name", "datacenter", "datastore", "folder", "resource_pool"):
            assert of_snap[key] == of_vm[key]
    finally:
        remove_snapshot(session, snap)


def test_default_hardware_has_the_same_keys_as_recorded_hardware(session, lab_vm):
    recorded = hardware_of(session, lab_vm)
    default = default_hardware([{"disk_id": d["disk_id"], "capacity": d["capacity"]}
                                for d in recorded["disks"]], name=recorded["name"])  # fmt: skip
    assert set(default) == set(recorded)
    assert [set(d) for d in default["disks"]] == [set(d) for d in recorded["disks"]]
    assert [set(c) for c in default["controllers"]] == [set(recorded["controllers"][0])]
