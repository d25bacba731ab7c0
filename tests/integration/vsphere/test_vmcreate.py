"""A restored VM's round trip against the simulator: create from recorded hardware, PUT
each flat disk and its descriptor, attach, read back by ranged GETs, destroy."""

from __future__ import annotations

import copy
import hashlib
import urllib.request

import pytest
from pyVmomi import vim

from sendense_tools.backup.sources import session_vddk_args
from sendense_tools.lab.pattern import content_sha256, iter_content
from sendense_tools.nbd.sources import nbdkit_vddk_args
from sendense_tools.vsphere.connection import VsphereError
from sendense_tools.vsphere.datastore import folder_url, probe_url
from sendense_tools.vsphere.devices import controller_type
from sendense_tools.vsphere.hardware import hardware_of
from sendense_tools.vsphere.inventory import find_vm, split_datastore_file, vms_named
from sendense_tools.vsphere.placement import resolve_placement, vm_directory
from sendense_tools.vsphere.upload import descriptor_text, put_file, upload_url
from sendense_tools.vsphere.vmcreate import (
    attach_disks,
    create_vm,
    delete_files,
    destroy_vm,
    disk_file,
    power_on,
)

D = vim.vm.device


@pytest.fixture
def recorded(vcsim, session):
    return hardware_of(session, find_vm(session, vcsim.vm))


@pytest.fixture
def created(session):
    """Collects the VMs a test creates and destroys them whatever happened."""
    vms: list = []
    yield vms
    for vm in vms:
        destroy_vm(session, vm)


def seed_of(name: str, disk_id: str) -> str:
    return f"restore-test:{name}:{disk_id}"


def upload_disk(session, placement, name: str, disk: dict, adapter: str) -> str:
    """PUT the flat file (the lab pattern of the disk's capacity) and its descriptor."""
    file = disk_file(placement, name, disk["disk_id"])
    url = folder_url(session.endpoint, placement.datacenter, file)
    chunks = iter_content(disk["capacity"], seed_of(name, disk["disk_id"]))
    put_file(session.trust, session.session_cookie(), url, disk["capacity"], chunks)
    flat_name = split_datastore_file(url_file(file))[1].rsplit("/", 1)[-1]
    text = descriptor_text(disk["capacity"], flat_name, adapter).encode()
    url = upload_url(session.endpoint, placement.datacenter, file)
    put_file(session.trust, session.session_cookie(), url, len(text), [text])
    return file


def url_file(file: str) -> str:
    return file.removesuffix(".vmdk") + "-flat.vmdk"


def get(session, url: str, first: int | None = None, last: int | None = None) -> bytes:
    headers = {"Cookie": session.session_cookie()}
    if first is not None:
        headers["Range"] = f"bytes={first}-{last}"
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, context=session.trust.context) as resp:
        assert resp.status == (206 if first is not None else 200)
        return resp.read()


def content_range(capacity: int, seed: str, first: int, last: int) -> bytes:
    out, pos = bytearray(), 0
    for chunk in iter_content(capacity, seed):
        end = pos + len(chunk)
        if end > first and pos <= last:
            out += chunk[max(first - pos, 0) : last + 1 - pos]
        pos = end
    return bytes(out)


def test_restore_round_trip_in_another_folder_and_pool(
    vcsim, session, recorded, elsewhere, created
):
    name = "restored-vm"
    # The seeded VM's hardware, made unlike the simulator's defaults, with a second
    # controller of another type that one disk moves to.
    hw = copy.deepcopy(recorded)
    hw.update(num_cpus=4, cores_per_socket=2, memory_mb=512, guest_id="ubuntu64Guest",
              firmware="efi", version="vmx-14")  # fmt: skip
    hw["controllers"].append(
        {"key": 1001, "type": "lsilogic-sas", "bus": 1, "sharing": "noSharing"}
    )
    hw["disks"][2].update(controller_key=1001, unit=3)
    p = resolve_placement(session, hw, None, elsewhere.folder, elsewhere.pool)
    vm, warnings = create_vm(session, name, hw, p, extra_config={"sendense.restore": "r-1"})
    created.append(vm)
    assert warnings == []
    marks = {o.key: o.value for o in vm.config.extraConfig}
    assert marks["sendense.restore"] == "r-1"
    assert not [d for d in vm.config.hardware.device if isinstance(d, D.VirtualDisk)]
    recorded_ctls = {c["key"]: c for c in hw["controllers"]}
    files = {}
    for disk in hw["disks"]:
        adapter = recorded_ctls[disk["controller_key"]]["type"]
        files[disk["disk_id"]] = upload_disk(session, p, name, disk, adapter)
    attach_disks(session, vm, hw, files)

    assert vm.parent == elsewhere.folder_obj and vm.resourcePool == elsewhere.pool_obj
    assert vm.config.files.vmPathName == f"[{p.datastore}] {name}/{name}.vmx"
    c = vm.config
    assert (c.hardware.numCPU, c.hardware.numCoresPerSocket, c.hardware.memoryMB) == (4, 2, 512)
    assert (c.guestId, c.firmware, c.version) == ("ubuntu64Guest", "efi", "vmx-14")

    # Each disk on a controller of its recorded type and bus, at its recorded unit.
    new_devices = {d.key: d for d in vm.config.hardware.device}
    new_disks = {
        d.backing.fileName: d for d in new_devices.values() if isinstance(d, D.VirtualDisk)
    }
    assert sorted(new_disks) == sorted(files.values())
    for disk in hw["disks"]:
        dev = new_disks[files[disk["disk_id"]]]
        ctl, now = recorded_ctls[disk["controller_key"]], new_devices[dev.controllerKey]
        assert (controller_type(now), now.busNumber) == (ctl["type"], ctl["bus"])
        assert dev.unitNumber == disk["unit"] and dev.capacityInBytes == disk["capacity"]
    assert isinstance(new_devices[new_disks[files["disk2"]].controllerKey],
                      D.VirtualLsiLogicSASController)  # fmt: skip
    # The NICs on the same networks, of the same types.
    assert [(n["type"], n["network"]) for n in hardware_of(session, vm)["nics"]] == [
        (n["type"], n["network"]) for n in recorded["nics"]
    ]

    # Read back from the datastore: whole files and ranges are the bytes that were put.
    for disk in hw["disks"]:
        seed = seed_of(name, disk["disk_id"])
        url = folder_url(session.endpoint, p.datacenter, files[disk["disk_id"]])
        assert hashlib.sha256(get(session, url)).hexdigest() == content_sha256(
            disk["capacity"], seed
        )
        first, last = disk["capacity"] // 3 + 12345, disk["capacity"] // 3 + 12345 + (1 << 20)
        assert get(session, url, first, last) == content_range(disk["capacity"], seed, first, last)

    power_on(session, vm)
    assert vm.runtime.powerState == "poweredOn"
    destroy_vm(session, vm)
    assert vms_named(session, name) == []
    directory = upload_url(session.endpoint, p.datacenter, vm_directory(p, name) + "/")
    assert probe_url(directory, session.session_cookie(), session.trust) == 404
    destroy_vm(session, vm)  # already gone: fine


def test_a_missing_network_gives_a_disconnected_nic_and_a_warning(session, recorded, created):
    hw = copy.deepcopy(recorded)
    hw["nics"] = [
        {"type": "vmxnet3", "network": "VM Network", "connected": True},
        {"type": "pcnet32", "network": "gone-network", "connected": True},
    ]
    p = resolve_placement(session, hw, None, None, None)
    vm, warnings = create_vm(session, "restored-nics", hw, p)
    created.append(vm)
    assert len(warnings) == 1 and "'gone-network'" in warnings[0] and "disconnected" in warnings[0]
    nics = [d for d in vm.config.hardware.device if isinstance(d, D.VirtualEthernetCard)]
    assert [type(n) for n in nics] == [D.VirtualVmxnet3, D.VirtualPCNet32]
    assert [n.connectable.startConnected for n in nics] == [True, False]
    assert nics[0].backing.deviceName == "VM Network"


def test_vddk_path_creates_thin_disks_and_mock_vddk_write_args(vcsim, session, recorded, created):
    """The disks come from CreateVM (thin, named as restores name them); VDDK itself cannot
    run here, so only the nbdkit vddk arguments that would write them are checked."""
    name = "restored-vddk"
    p = resolve_placement(session, recorded, None, None, None)
    vm, _ = create_vm(session, name, recorded, p, disks_thin=True)
    created.append(vm)
    disks = sorted((d for d in vm.config.hardware.device if isinstance(d, D.VirtualDisk)),
                   key=lambda d: d.unitNumber)  # fmt: skip
    assert [d.backing.fileName for d in disks] == [
        disk_file(p, name, d["disk_id"]) for d in recorded["disks"]
    ]
    assert all(d.backing.thinProvisioned for d in disks)
    assert [(d.unitNumber, d.capacityInBytes) for d in disks] == [
        (d["unit"], d["capacity"]) for d in recorded["disks"]
    ]
    pw = str(vcsim.password_file())
    args = session_vddk_args(session, vm._moId, None, disks[0].backing.fileName, pw, "/opt/vddk")
    argv = nbdkit_vddk_args(args)
    assert f"vm=moref={vm._moId}" in argv and f"file={disks[0].backing.fileName}" in argv
    assert not any(a.startswith("snapshot=") for a in argv)
    assert f"thumbprint={vcsim.thumbprint}" in argv


def test_a_failed_create_leaves_no_vm_and_no_directory(session, recorded, created):
    hw = copy.deepcopy(recorded)
    hw["disks"][1]["unit"] = hw["disks"][0]["unit"]  # two disks on one unit: refused
    p = resolve_placement(session, hw, None, None, None)
    with pytest.raises(VsphereError, match="create VM 'restored-bad'") as err:
        created.append(create_vm(session, "restored-bad", hw, p, disks_thin=True)[0])
    assert "\n" not in str(err.value)
    assert vms_named(session, "restored-bad") == []
    directory = upload_url(session.endpoint, p.datacenter, vm_directory(p, "restored-bad") + "/")
    assert probe_url(directory, session.session_cookie(), session.trust) == 404


def test_attaching_a_file_that_is_not_there_fails_clearly(session, recorded, created):
    p = resolve_placement(session, recorded, None, None, None)
    vm, _ = create_vm(session, "restored-nofile", recorded, p)
    created.append(vm)
    disk = recorded["disks"][0]
    with pytest.raises(VsphereError, match="attach disks") as err:
        attach_disks(
            session, vm, recorded, {disk["disk_id"]: disk_file(p, "restored-nofile", "disk0")}
        )
    assert "\n" not in str(err.value)
    assert not [d for d in vm.config.hardware.device if isinstance(d, D.VirtualDisk)]


def test_delete_files_removes_a_directory_and_accepts_a_missing_one(session, recorded):
    p = resolve_placement(session, recorded, None, None, None)
    file = f"[{p.datastore}] orphan/orphan_disk0-flat.vmdk"
    put_file(session.trust, session.session_cookie(),
             upload_url(session.endpoint, p.datacenter, file), 4, [b"data"])  # fmt: skip
    url = upload_url(session.endpoint, p.datacenter, file)
    assert probe_url(url, session.session_cookie(), session.trust) == 206
    delete_files(session, p.datacenter_obj, f"[{p.datastore}] orphan")
    assert probe_url(url, session.session_cookie(), session.trust) == 404
    delete_files(session, p.datacenter_obj, f"[{p.datastore}] orphan")
