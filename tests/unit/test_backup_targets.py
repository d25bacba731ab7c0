"""NBD targets must match the VM's disks one to one."""

from __future__ import annotations

import pytest

from sendense_tools.backup.targets import TargetMismatch, match_targets
from sendense_tools.nbd.endpoint import parse_nbd_targets
from sendense_tools.vsphere.inventory import DiskInfo

DISKS = [
    DiskInfo("disk0", 2000, "Hard disk 1", "[ds] vm/vm.vmdk", 1 << 20),
    DiskInfo("disk1", 2001, "Hard disk 2", "[ds] vm/vm_1.vmdk", 1 << 20),
]


def test_every_disk_has_a_target():
    match_targets(DISKS, parse_nbd_targets("disk0:nbd://h:1/a,disk1:nbd://h:2/b"))


def test_a_disk_without_target_is_named():
    with pytest.raises(TargetMismatch, match="no NBD target for disk1"):
        match_targets(DISKS, parse_nbd_targets("disk0:nbd://h:1/a"))


def test_a_target_without_disk_is_named():
    with pytest.raises(TargetMismatch, match="disk7 names no disk"):
        match_targets(
            DISKS, parse_nbd_targets("disk0:nbd://h:1/a,disk1:nbd://h:2/b,disk7:nbd://h:3/c")
        )
