"""The recorded device type names and the pyvmomi classes they stand for, both ways."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from sendense_tools.vsphere.connection import VsphereError
from sendense_tools.vsphere.devices import (
    CONTROLLERS,
    NICS,
    controller_class,
    controller_type,
    free_units,
    nic_class,
    nic_type,
)

D = vim.vm.device


@pytest.mark.parametrize("kind", sorted(CONTROLLERS))
def test_a_controller_type_round_trips(kind):
    assert controller_type(controller_class(kind)()) == kind


@pytest.mark.parametrize("kind", sorted(NICS))
def test_a_nic_type_round_trips(kind):
    assert nic_type(nic_class(kind)()) == kind


def test_subclasses_and_unlisted_types():
    assert nic_type(D.VirtualVmxnet3Vrdma()) == "vmxnet3"
    assert nic_type(D.VirtualSriovEthernetCard()) == "vmxnet3"
    assert controller_type(D.VirtualSATAController()) == "sata"
    assert controller_type(D.VirtualDisk()) is None and nic_type(D.VirtualDisk()) is None


def test_units_a_disk_may_take():
    assert 7 not in free_units("pvscsi") and len(free_units("pvscsi")) == 15
    assert free_units("ide") == [0, 1] and len(free_units("sata")) == 30
    assert len(free_units("nvme")) == 15


def test_unknown_type_names_are_refused():
    with pytest.raises(VsphereError, match="'scsi' is not one of"):
        controller_class("scsi")
    with pytest.raises(VsphereError, match="'rtl8139' is not one of"):
        nic_class("rtl8139")
