"""CBT on the node against the lab simulator: the mode decision on evidence, and incrementals.

The plan tests (plan_copies, prepare_cbt, a refused incremental) run on the
node's half alone. The backup tests copy into qcow2 chains and need the copy
engine's `areas=` (engineer "engine"): they run once both halves are merged.
Expected content is read from the simulator's disk files on this machine,
never from what the node or the simulator reports.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
from pyVmomi import vim

from sendense_tools.backup.executor import BackupOptions, backup_vm
from sendense_tools.backup.mode import IncrementalRefused, PreviousDisk
from sendense_tools.backup.plan import plan_copies, prepare_cbt
from sendense_tools.nbd.endpoint import NbdEndpoint
from sendense_tools.vsphere.cbt import cbt_enabled, snapshot_change_ids
from sendense_tools.vsphere.connection import VsphereSession
from sendense_tools.vsphere.inventory import DiskInfo, find_vm
from sendense_tools.vsphere.props import read_props, wait_task
from sendense_tools.vsphere.snapshots import (
    SnapshotRef,
    create_snapshot,
    remove_snapshot,
    snapshot_disks,
)
from tests.fixtures.vcsim import remaining_snapshots
from tests.integration.test_vcsim_cbt import flat_path, set_cbt

CBT_BLOCK = 64 << 10
BLOCK = 4 << 20


@pytest.fixture(scope="module")
def session(vcsim) -> Iterator[VsphereSession]:
    s = vcsim.session()
    yield s
    s.close()


@pytest.fixture(scope="module")
def vm(session, vcsim) -> vim.VirtualMachine:
    return find_vm(session, vcsim.vm)


@pytest.fixture
def snaps(session) -> Iterator[list[SnapshotRef]]:
    made: list[SnapshotRef] = []
    yield made
    for s in made:
        remove_snapshot(session, s)


def snapshot(session, vm, snaps: list[SnapshotRef], name: str) -> SnapshotRef:
    snap = create_snapshot(session, vm, name)
    snaps.append(snap)
    return snap


def previous_of(session, snap: SnapshotRef) -> dict[str, PreviousDisk]:
    """What a completed point built from `snap` would hand the next backup."""
    ids = snapshot_change_ids(session, snap)
    return {
        d.disk_id: PreviousDisk(ids[d.key] or "", d.capacity, d.key)
        for d in snapshot_disks(session, snap)
    }


def plan(session, vm, snap, cbt, changed_since, requested="auto"):
    return plan_copies(
        session, vm, snap, snapshot_disks(session, snap), cbt, requested, changed_since
    )


def vm_disk(session, vm, disk_id: str) -> vim.vm.device.VirtualDisk:
    devices = read_props(session, vm, ["config.hardware.device"])["config.hardware.device"]
    disks = sorted((d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)),
                   key=lambda d: d.key)  # fmt: skip
    return disks[int(disk_id.removeprefix("disk"))]


def write_at(session, vm, disk_id: str, offset: int, data: bytes) -> None:
    """Write into the VM's disk as its guest would (the flat file, on this machine)."""
    with open(flat_path(session, vm, vm_disk(session, vm, disk_id)), "r+b") as f:
        os.pwrite(f.fileno(), data, offset)


def disk_content(session, vm, disk: DiskInfo) -> bytes:
    with open(flat_path(session, vm, vm_disk(session, vm, disk.disk_id)), "rb") as f:
        data = f.read(disk.capacity)
    return data + bytes(disk.capacity - len(data))


def blocks_of(areas, block: int = CBT_BLOCK) -> set[int]:
    return {b for s, n in areas for b in range(s // block, (s + n - 1) // block + 1)}


# -- the decision against the simulator's CBT (the node's half alone) -----------


def test_prepare_cbt_turns_tracking_on_only_when_wanted_and_says_how_it_was(session, vm):
    set_cbt(session, vm, False)
    assert prepare_cbt(session, vm, wanted=False) == "off"
    assert not cbt_enabled(session, vm)
    assert prepare_cbt(session, vm, wanted=True) == "enabled"
    assert cbt_enabled(session, vm)
    assert prepare_cbt(session, vm, wanted=True) == "on"


def test_an_incremental_plan_holds_exactly_the_written_areas_and_the_new_change_ids(
    session, vm, snaps
):
    set_cbt(session, vm, True)
    first = snapshot(session, vm, snaps, "plan-base")
    prev = previous_of(session, first)
    remove_snapshot(session, first)
    snaps.remove(first)
    rng = random.Random("plan")
    write_at(session, vm, "disk0", 5 * CBT_BLOCK + 10, rng.randbytes(CBT_BLOCK))  # 2 blocks
    write_at(session, vm, "disk1", 40 * CBT_BLOCK, rng.randbytes(100))
    second = snapshot(session, vm, snaps, "plan-next")
    decision, plans = plan(session, vm, second, "on", prev)
    assert (decision.mode, decision.reason) == ("incremental", None)
    assert blocks_of(plans["disk0"].areas) == {5, 6}
    assert blocks_of(plans["disk1"].areas) == {40}
    assert plans["disk2"].areas == []
    ids = snapshot_change_ids(session, second)
    for d in snapshot_disks(session, second):
        assert plans[d.disk_id].change_id == ids[d.key] != prev[d.disk_id].change_id
        assert not plans[d.disk_id].target_is_zero  # an overlay: zeroes are written


@pytest.mark.parametrize(
    ("cbt", "reason"),
    [("off", "CBT is off ([backup] cbt = false)"), ("enabled", "CBT was just enabled")],
)
def test_cbt_off_or_just_enabled_is_a_full_of_the_whole_overlay(session, vm, snaps, cbt, reason):
    set_cbt(session, vm, True)
    prev = previous_of(session, snapshot(session, vm, snaps, f"plan-{cbt}"))
    decision, plans = plan(session, vm, snapshot(session, vm, snaps, f"plan-{cbt}-2"), cbt, prev)
    assert (decision.mode, decision.reason) == ("full", reason)
    for disk_id, p in prev.items():
        assert plans[disk_id].areas == [(0, p.capacity)]


def test_no_previous_point_is_a_full_into_a_fresh_image(session, vm, snaps):
    set_cbt(session, vm, True)
    decision, plans = plan(session, vm, snapshot(session, vm, snaps, "plan-none"), "on", None)
    assert (decision.mode, decision.reason) == ("full", "no previous point")
    assert all(p.areas is None and p.target_is_zero and p.change_id for p in plans.values())


def test_a_cbt_reset_between_points_is_a_full_naming_the_epoch(session, vm, snaps):
    set_cbt(session, vm, True)
    prev = previous_of(session, snapshot(session, vm, snaps, "plan-before-reset"))
    set_cbt(session, vm, False)
    set_cbt(session, vm, True)
    decision, _ = plan(session, vm, snapshot(session, vm, snaps, "plan-after-reset"), "on", prev)
    assert (decision.mode, decision.reason) == (
        "full", "change id of disk0 is from another CBT epoch"
    )  # fmt: skip


def test_a_change_id_vcenter_does_not_know_is_a_full_naming_the_file_fault(session, vm, snaps):
    set_cbt(session, vm, True)
    prev = previous_of(session, snapshot(session, vm, snaps, "plan-unknown"))
    epoch = prev["disk0"].change_id.rpartition("/")[0]
    prev["disk0"] = PreviousDisk(f"{epoch}/999999", prev["disk0"].capacity, prev["disk0"].key)
    decision, plans = plan(session, vm, snapshot(session, vm, snaps, "plan-unknown-2"), "on", prev)
    assert decision.mode == "full"
    assert decision.reason.startswith("QueryChangedDiskAreas: FileFault ")
    assert "is not known for this disk" in decision.reason
    assert plans["disk0"].areas == [(0, prev["disk0"].capacity)]


def test_a_disk_the_previous_point_did_not_have_is_a_full(session, vm, snaps):
    set_cbt(session, vm, True)
    prev = previous_of(session, snapshot(session, vm, snaps, "plan-added"))
    del prev["disk2"]
    decision, _ = plan(session, vm, snapshot(session, vm, snaps, "plan-added-2"), "on", prev)
    assert (decision.mode, decision.reason) == ("full", "disk2 was added")


async def test_a_demanded_incremental_without_evidence_fails_and_leaves_no_snapshot(
    vcsim, session, vm, qemu_nbd_target
):
    set_cbt(session, vm, False)
    targets = {
        d.disk_id: NbdEndpoint(qemu_nbd_target(d.capacity, export=d.disk_id).uri)
        for d in vcsim.disks
    }
    prev = {d.disk_id: PreviousDisk("52 aa-bb/1") for d in vcsim.disks}
    with pytest.raises(IncrementalRefused, match=r"not possible: CBT is off \(\[backup\] cbt"):
        await backup_vm(
            vcsim.params(), vcsim.vm, targets, "refused", BackupOptions(cbt=False),
            mode="incremental", changed_since=prev,
        )  # fmt: skip
    assert remaining_snapshots(vcsim) == []
    set_cbt(session, vm, True)


def test_a_resized_disk_is_a_full_naming_both_sizes(session, vm, snaps):
    """Last of the plan tests: it leaves disk1 grown."""
    set_cbt(session, vm, True)
    prev = previous_of(session, snapshot(session, vm, snaps, "plan-resize"))
    disk = vm_disk(session, vm, "disk1")
    old = disk.capacityInBytes
    disk.capacityInBytes = old + (8 << 20)
    disk.capacityInKB = disk.capacityInBytes // 1024
    spec = vim.vm.ConfigSpec(
        deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)]
    )
    wait_task(session, session.call(vm.ReconfigVM_Task, spec), "grow disk1")
    decision, _ = plan(session, vm, snapshot(session, vm, snaps, "plan-resize-2"), "on", prev)
    assert (decision.mode, decision.reason) == (
        "full", f"disk1 was resized ({old} -> {old + (8 << 20)} bytes)"
    )  # fmt: skip
