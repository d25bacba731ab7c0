"""The device types a restore point records, by name, and the pyvmomi classes they stand for.

One table each way, so that what `hardware_of` writes is exactly what `create_vm` reads.
Lookups go by isinstance in table order: a subclass (VirtualVmxnet3Vrdma, a SATA
controller that is not AHCI) is recorded as its closest listed ancestor.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from sendense_tools.vsphere.params import VsphereError

D = vim.vm.device

CONTROLLERS: dict[str, type] = {
    "lsilogic": D.VirtualLsiLogicController,
    "lsilogic-sas": D.VirtualLsiLogicSASController,
    "pvscsi": D.ParaVirtualSCSIController,
    "buslogic": D.VirtualBusLogicController,
    "nvme": D.VirtualNVMEController,
    "sata": D.VirtualAHCIController,
    "ide": D.VirtualIDEController,
}
# Matched after CONTROLLERS: the abstract base of a listed type.
CONTROLLER_BASES: dict[str, type] = {"sata": D.VirtualSATAController}

NICS: dict[str, type] = {
    "vmxnet3": D.VirtualVmxnet3,
    "e1000e": D.VirtualE1000e,
    "e1000": D.VirtualE1000,
    "pcnet32": D.VirtualPCNet32,
    "vmxnet2": D.VirtualVmxnet2,
}
# A NIC of an unlisted type (SR-IOV, the original vmxnet) comes back as the paravirtual default.
DEFAULT_NIC = "vmxnet3"

# Units a disk may not use: 7 is the SCSI controller's own.
RESERVED_UNITS = {"lsilogic": {7}, "lsilogic-sas": {7}, "pvscsi": {7}, "buslogic": {7}}
UNITS_PER_CONTROLLER = {"nvme": 15, "sata": 30, "ide": 2}
SCSI_UNITS = 16

# Every VM has its two IDE controllers: they are matched, never added.
BUILT_IN = {"ide"}


def controller_type(device: Any) -> str | None:
    """The recorded name of a storage controller, None for any other device."""
    for table in (CONTROLLERS, CONTROLLER_BASES):
        for name, cls in table.items():
            if isinstance(device, cls):
                return name
    return None


def nic_type(device: Any) -> str | None:
    """The recorded name of a network card, None for any other device."""
    if not isinstance(device, D.VirtualEthernetCard):
        return None
    for name, cls in NICS.items():
        if isinstance(device, cls):
            return name
    return DEFAULT_NIC


def free_units(kind: str) -> list[int]:
    """The unit numbers a disk may take on a controller of `kind`."""
    count = UNITS_PER_CONTROLLER.get(kind, SCSI_UNITS)
    return [u for u in range(count) if u not in RESERVED_UNITS.get(kind, set())]


def controller_class(kind: str) -> type:
    try:
        return CONTROLLERS[kind]
    except KeyError:
        raise VsphereError(
            f"controller type {kind!r} is not one of {', '.join(CONTROLLERS)}"
        ) from None


def nic_class(kind: str) -> type:
    try:
        return NICS[kind]
    except KeyError:
        raise VsphereError(f"network card type {kind!r} is not one of {', '.join(NICS)}") from None
