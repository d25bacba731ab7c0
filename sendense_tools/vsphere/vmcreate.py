"""Create the restored VM from recorded hardware, attach its disks, and remove it again.

A restored VM's files all live in "[ds] <name>/": its .vmx, and each disk as
"<name>_<disk_id>.vmdk" plus "<name>_<disk_id>-flat.vmdk". Disks keep their recorded
controller and unit; controllers are matched by type and bus, since vCenter gives the
new VM's devices keys of its own. Every task is waited for with a timeout.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from sendense_tools.vsphere.connection import VsphereError, VsphereSession
from sendense_tools.vsphere.datastore import file_url, probe_url
from sendense_tools.vsphere.devices import (
    BUILT_IN,
    controller_class,
    controller_type,
    nic_class,
)
from sendense_tools.vsphere.inventory import datacenter_path
from sendense_tools.vsphere.placement import Placement, ensure_name_free, vm_directory
from sendense_tools.vsphere.props import TaskError, read_props, view_props, wait_task

D = vim.vm.device
CREATE_TIMEOUT = 300.0
RECONFIG_TIMEOUT = 300.0
POWER_TIMEOUT = 300.0
DESTROY_TIMEOUT = 300.0
DELETE_TIMEOUT = 300.0
# Keys of the IDE controllers every VM has, by bus.
IDE_KEYS = {0: 200, 1: 201}


def disk_file(placement: Placement, name: str, disk_id: str) -> str:
    """ "[ds] <name>/<name>_<disk_id>.vmdk": the descriptor; its data is <...>-flat.vmdk."""
    return f"{vm_directory(placement, name)}/{name}_{disk_id}.vmdk"


def _controller_spec(ctl: dict, key: int) -> vim.vm.device.VirtualDeviceSpec:
    cls = controller_class(ctl["type"])
    dev = cls(key=key, busNumber=int(ctl["bus"]))
    if isinstance(dev, D.VirtualSCSIController):
        dev.sharedBus = ctl.get("sharing") or "noSharing"
    return D.VirtualDeviceSpec(operation="add", device=dev)


def _networks(session: VsphereSession, placement: Placement) -> dict[str, Any]:
    found = view_props(session, placement.datacenter_obj, [vim.Network], ["name"])
    return {props.get("name", ""): obj for obj, props in found}


def _nic_backing(session: VsphereSession, net: Any) -> Any:
    if isinstance(net, vim.dvs.DistributedVirtualPortgroup):
        p = read_props(session, net, ["key", "config.distributedVirtualSwitch"])
        dvs = p["config.distributedVirtualSwitch"]
        uuid = read_props(session, dvs, ["uuid"])["uuid"]
        port = vim.dvs.PortConnection(switchUuid=uuid, portgroupKey=p["key"])
        return D.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port)
    name = read_props(session, net, ["name"])["name"]
    return D.VirtualEthernetCard.NetworkBackingInfo(deviceName=name, network=net)


def _nic_specs(
    session: VsphereSession, hardware: dict, placement: Placement
) -> tuple[list[Any], list[str]]:
    """NIC specs by network name; a NIC whose network is gone comes back disconnected."""
    networks = _networks(session, placement)
    # A standard network to hold a NIC whose own is missing: a card needs some backing.
    spare = next(
        (
            n
            for n, obj in networks.items()
            if not isinstance(obj, vim.dvs.DistributedVirtualPortgroup | vim.OpaqueNetwork)
        ),
        None,
    )
    specs, warnings = [], []
    for n, nic in enumerate(hardware.get("nics") or []):
        connected = bool(nic.get("connected", True))
        net = networks.get(nic["network"])
        if net is None:
            if spare is None:
                warnings.append(
                    f"NIC {n} ({nic['type']}): network {nic['network']!r} not found in "
                    f"datacenter {placement.datacenter}, which has no standard network: left out"
                )
                continue
            warnings.append(
                f"NIC {n} ({nic['type']}): network {nic['network']!r} not found in datacenter "
                f"{placement.datacenter}: added disconnected, on {spare!r}"
            )
            net, connected = networks[spare], False
        card = nic_class(nic["type"])(
            key=-(500 + n),
            backing=_nic_backing(session, net),
            addressType="generated",
            connectable=D.VirtualDevice.ConnectInfo(
                startConnected=connected, connected=False, allowGuestControl=True
            ),
        )
        specs.append(D.VirtualDeviceSpec(operation="add", device=card))
    return specs, warnings


def _disk(disk: dict, controller_key: int, file: str, key: int) -> Any:
    backing = D.VirtualDisk.FlatVer2BackingInfo(fileName=file, diskMode="persistent")
    capacity = int(disk["capacity"])
    return D.VirtualDisk(
        key=key,
        controllerKey=controller_key,
        unitNumber=int(disk["unit"]),
        capacityInBytes=capacity,
        capacityInKB=capacity // 1024,
        backing=backing,
    )


def _controllers_by_key(hardware: dict) -> dict[int, dict]:
    return {int(c["key"]): c for c in hardware.get("controllers") or []}


def _recorded_controller(hardware: dict, disk: dict) -> dict:
    ctl = _controllers_by_key(hardware).get(int(disk["controller_key"]))
    if ctl is None:
        raise VsphereError(
            f"{disk['disk_id']}: its controller {disk['controller_key']} is not in the hardware"
        )
    return ctl


def create_vm(
    session: VsphereSession,
    name: str,
    hardware: dict,
    placement: Placement,
    *,
    disks_thin: bool = False,
    extra_config: dict[str, str] | None = None,
) -> tuple[vim.VirtualMachine, list[str]]:
    """The new VM (powered off) and the warnings about what could not be rebuilt as recorded.

    No disks, unless `disks_thin`: then each recorded disk is created empty and thin at
    `disk_file` (the vddk transport writes into it). `extra_config` is set by the same
    CreateVM call, so that a mark on the VM (whose restore made it) is there from its
    first moment. A failed create removes the directory it made.
    """
    ensure_name_free(session, name, placement)
    changes = []
    new_keys: dict[int, int] = {}
    for n, ctl in enumerate(hardware.get("controllers") or []):
        if ctl["type"] in BUILT_IN:
            new_keys[int(ctl["key"])] = IDE_KEYS.get(int(ctl["bus"]), 200)
            continue
        new_keys[int(ctl["key"])] = -(100 + n)
        changes.append(_controller_spec(ctl, new_keys[int(ctl["key"])]))
    nics, warnings = _nic_specs(session, hardware, placement)
    changes += nics
    if disks_thin:
        for n, disk in enumerate(hardware.get("disks") or []):
            _recorded_controller(hardware, disk)
            dev = _disk(
                disk,
                new_keys[int(disk["controller_key"])],
                disk_file(placement, name, disk["disk_id"]),
                -(1000 + n),
            )
            dev.backing.thinProvisioned = True
            changes.append(D.VirtualDeviceSpec(operation="add", fileOperation="create", device=dev))
    spec = vim.vm.ConfigSpec(
        name=name,
        numCPUs=int(hardware["num_cpus"]),
        numCoresPerSocket=int(hardware["cores_per_socket"]),
        memoryMB=int(hardware["memory_mb"]),
        guestId=hardware["guest_id"],
        firmware=hardware["firmware"],
        files=vim.vm.FileInfo(vmPathName=f"{vm_directory(placement, name)}/{name}.vmx"),
        deviceChange=changes,
    )
    if hardware.get("version"):
        spec.version = hardware["version"]
    if extra_config:
        spec.extraConfig = [vim.option.OptionValue(key=k, value=v) for k, v in extra_config.items()]
    folder = placement.folder_obj
    try:
        task = session.call(folder.CreateVM_Task, config=spec, pool=placement.resource_pool_obj)
        vm = wait_task(session, task, f"create VM {name!r}", CREATE_TIMEOUT)
    except VsphereError:
        delete_files(session, placement.datacenter_obj, vm_directory(placement, name))
        raise
    if vm is None:
        raise VsphereError(f"create VM {name!r}: vCenter returned no VM")
    return vm, warnings


def attach_disks(
    session: VsphereSession, vm: vim.VirtualMachine, hardware: dict, files: dict[str, str]
) -> None:
    """Attach the existing files (disk_id -> "[ds] path.vmdk") in ONE reconfigure, each on
    its recorded controller (matched by type and bus) and unit."""
    disks = {d["disk_id"]: d for d in hardware.get("disks") or []}
    unknown = sorted(set(files) - set(disks))
    if unknown:
        raise VsphereError(f"attach disks: {', '.join(unknown)} not in the recorded hardware")
    devices = read_props(session, vm, ["config.hardware.device"]).get("config.hardware.device")
    present = {}
    for d in devices or []:
        kind = controller_type(d)
        if kind is not None:
            present[(kind, int(d.busNumber))] = d.key
    changes = []
    for n, (disk_id, file) in enumerate(files.items()):
        disk = disks[disk_id]
        ctl = _recorded_controller(hardware, disk)
        key = present.get((ctl["type"], int(ctl["bus"])))
        if key is None:
            raise VsphereError(
                f"attach {disk_id}: the VM has no {ctl['type']} controller on bus {ctl['bus']}"
            )
        changes.append(
            D.VirtualDeviceSpec(operation="add", device=_disk(disk, key, file, -(n + 1)))
        )
    task = session.call(vm.ReconfigVM_Task, vim.vm.ConfigSpec(deviceChange=changes))
    wait_task(session, task, f"attach disks to {vm._moId}", RECONFIG_TIMEOUT)


def power_on(session: VsphereSession, vm: vim.VirtualMachine) -> None:
    task = session.call(vm.PowerOnVM_Task)
    wait_task(session, task, f"power on {vm._moId}", POWER_TIMEOUT)


def _gone(fault: Any) -> bool:
    return isinstance(fault, vmodl.fault.ManagedObjectNotFound)


def _power_off(session: VsphereSession, vm: vim.VirtualMachine) -> None:
    try:
        task = session.call(vm.PowerOffVM_Task)
        wait_task(session, task, f"power off {vm._moId}", POWER_TIMEOUT)
    except TaskError as exc:
        # Off already (someone else, or a guest shutdown, was quicker): what was wanted.
        if not isinstance(exc.fault, vim.fault.InvalidPowerState):
            raise


def destroy_vm(session: VsphereSession, vm: vim.VirtualMachine) -> None:
    """Power the VM off if it is on and destroy it with its files; a VM already gone is fine."""
    try:
        state = read_props(session, vm, ["runtime.powerState"]).get("runtime.powerState")
        if state == "poweredOn":
            _power_off(session, vm)
        task = session.call(vm.Destroy_Task)
        wait_task(session, task, f"destroy {vm._moId}", DESTROY_TIMEOUT)
    except vmodl.fault.ManagedObjectNotFound:
        return
    except TaskError as exc:
        if not _gone(exc.fault):
            raise


def delete_files(session: VsphereSession, datacenter: vim.Datacenter, path: str) -> None:
    """Delete a datastore file or directory ("[ds] dir"); one already missing is fine."""
    fm = session.content.fileManager
    try:
        task = session.call(fm.DeleteDatastoreFile_Task, name=path, datacenter=datacenter)
        wait_task(session, task, f"delete {path}", DELETE_TIMEOUT)
    except TaskError as exc:
        if isinstance(exc.fault, vim.fault.FileNotFound):
            return
        # Some vCenters (the simulator) say CannotDeleteFile for a missing file: look.
        url = file_url(session.endpoint, datacenter_path(session, datacenter), path)
        if probe_url(url, session.session_cookie(), session.trust) != 404:
            raise
