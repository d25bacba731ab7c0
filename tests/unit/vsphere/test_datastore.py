"""Datastore file URLs of the https transport: base disks only, never a stale substitute."""

from __future__ import annotations

import pytest

from sendense_tools.vsphere.datastore import DeltaDiskError, disk_url
from sendense_tools.vsphere.params import parse_vcenter_url

EP = parse_vcenter_url("https://vc")


def test_a_base_disk_is_read_from_its_flat_file():
    url = disk_url(EP, "DC", "[ds] vm/vm.vmdk")
    assert url == "https://vc/folder/vm/vm-flat.vmdk?dcPath=DC&dsName=ds"


@pytest.mark.parametrize("file", ["[ds] vm/vm-000001.vmdk", "[ds] vm/vm_1-000012.vmdk"])
def test_a_snapshot_delta_is_refused_not_replaced_by_its_base(file):
    with pytest.raises(DeltaDiskError) as err:
        disk_url(EP, "DC", file)
    message = str(err.value)
    assert file in message and "vddk" in message and "\n" not in message
