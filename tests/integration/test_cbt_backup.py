"""CBT on the node against the lab simulator: the mode decision on evidence, and incrementals.

The plan tests (plan_copies, prepare_cbt, a refused incremental) run on the
node's half alone. The backup tests copy into qcow2 chains and need the copy
engine's `areas=` (engineer "engine"): they run once both halves are merged.
Expected content is read from the simulator's disk files on this machine,
never from what the node or the simulator reports.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator

import pytest
from pyVmomi import vim

from sendense_tools.backup.executor import BackupOptions, backup_vm
from sendense_tools.backup.mode import IncrementalRefused, PreviousDisk
from sendense_tools.backup.plan import CbtStatus, plan_copies, prepare_cbt
from sendense_tools.lab.seed import SeededDisk
from sendense_tools.nbd.endpoint import NbdEndpoint
from sendense_tools.vsphere.cbt import cbt_enabled, enable_cbt, snapshot_change_ids
from sendense_tools.vsphere.connection import VsphereError, VsphereSession
from sendense_tools.vsphere.inventory import find_vm
from sendense_tools.vsphere.props import read_props, wait_task
from sendense_tools.vsphere.snapshots import (
    SnapshotRef,
    create_snapshot,
    remove_snapshot,
    snapshot_disks,
)
from tests.fixtures.chain import Chain
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
        session, vm, snap, snapshot_disks(session, snap), CbtStatus(cbt), requested, changed_since
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


def disk_content(session, vm, disk: SeededDisk) -> bytes:
    with open(flat_path(session, vm, vm_disk(session, vm, disk.disk_id)), "rb") as f:
        data = f.read(disk.capacity)
    return data + bytes(disk.capacity - len(data))


def blocks_of(areas, block: int = CBT_BLOCK) -> set[int]:
    return {b for s, n in areas for b in range(s // block, (s + n - 1) // block + 1)}


# -- the decision against the simulator's CBT (the node's half alone) -----------


def test_prepare_cbt_turns_tracking_on_only_when_wanted_and_says_how_it_was(session, vm):
    set_cbt(session, vm, False)
    assert prepare_cbt(session, vm, wanted=False) == CbtStatus("off")
    assert not cbt_enabled(session, vm)
    assert prepare_cbt(session, vm, wanted=True) == CbtStatus("enabled")
    assert cbt_enabled(session, vm)
    assert prepare_cbt(session, vm, wanted=True) == CbtStatus("on")


def test_a_reconfigure_vcenter_refuses_is_a_domain_error_naming_the_fault(session):
    gone = vim.VirtualMachine("vm-999999", session.si._stub)
    with pytest.raises(
        VsphereError, match=r"^enable changed block tracking: ManagedObjectNotFound"
    ):
        enable_cbt(session, gone)


def test_a_full_plan_for_https_reads_only_the_blocks_that_hold_data(session, vm, vcsim, snaps):
    set_cbt(session, vm, True)
    snap = snapshot(session, vm, snaps, "plan-full")
    frozen = snapshot_disks(session, snap)
    decision, plans = plan_copies(
        session, vm, snap, frozen, CbtStatus("on"), "full", None, allocated=True
    )
    assert decision.mode == "full"
    for disk in vcsim.disks:
        content = disk_content(session, vm, disk)
        data = {
            b for b in range(-(-disk.capacity // CBT_BLOCK))
            if any(content[b * CBT_BLOCK : (b + 1) * CBT_BLOCK])
        }  # fmt: skip
        p = plans[disk.disk_id]
        assert p.areas is None and p.target_is_zero  # a fresh image: holes are not written
        assert p.allocated is not None and blocks_of(p.allocated) == data, disk.disk_id
    # Without CBT, or for a source with extents of its own, nothing is asked.
    _, plans = plan_copies(session, vm, snap, frozen, CbtStatus("off"), "full", None, True)
    assert all(p.allocated is None for p in plans.values())
    _, plans = plan_copies(session, vm, snap, frozen, CbtStatus("on"), "full", None)
    assert all(p.allocated is None for p in plans.values())


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


# -- backups into qcow2 chains (need the engine's areas=: run after the merge) ----


def blkhash(data: bytes) -> dict:
    """DESIGN's checksum, computed here from the bytes (zero blocks hash like any other)."""
    digests = b"".join(
        hashlib.blake2b(data[i : i + BLOCK], digest_size=32).digest()
        for i in range(0, len(data), BLOCK)
    )
    return {
        "algorithm": "blake2b",
        "block_size": BLOCK,
        "checksum": hashlib.blake2b(digests, digest_size=32).hexdigest(),
    }


def changes_digest(data: bytes, areas) -> str:
    h = hashlib.blake2b(digest_size=32)
    for offset, length in areas:
        h.update(offset.to_bytes(8, "big") + length.to_bytes(8, "big"))
        h.update(data[offset : offset + length])
    return h.hexdigest()


def find_run(data: bytes, size: int, zero: bool, after: int = 0) -> int:
    """A CBT-block-aligned offset of `size` bytes that are all zero (or all hold some data)."""
    for off in range(after - after % CBT_BLOCK, len(data) - size, CBT_BLOCK):
        chunk = data[off : off + size]
        if zero == (not chunk.strip(b"\0")) and (zero or all(
            data[o : o + CBT_BLOCK].strip(b"\0") for o in range(off, off + size, CBT_BLOCK)
        )):  # fmt: skip
            return off
    raise AssertionError(f"no {'zero' if zero else 'data'} run of {size} bytes in the seed")


async def full_point(vcsim, chain: Chain, job: str):
    files = {d.disk_id: chain.create(f"{d.disk_id}-{job}.qcow2", d.capacity) for d in vcsim.disks}
    outcome = await backup_vm(vcsim.params(), vcsim.vm, chain.serve_all(files), job)
    chain.stop_all()
    return outcome, files


def scatter_writes(session, vm, at: dict[str, bytes]) -> dict[str, list[tuple[int, int]]]:
    """New data in a hole, data turned to zeroes, a write across a 4 MiB border; the ranges."""
    rng = random.Random("scatter")
    d0 = at["disk0"]
    writes = [
        ("disk0", find_run(d0, 5 * CBT_BLOCK, zero=True) + 777, rng.randbytes(300_000)),
        ("disk0", find_run(d0, 2 * CBT_BLOCK, zero=False, after=BLOCK * 2), bytes(2 * CBT_BLOCK)),
        ("disk0", 5 * BLOCK - 4096, rng.randbytes(8192)),
        ("disk1", 3 * BLOCK + 12345, rng.randbytes(1000)),
    ]
    ranges: dict[str, list[tuple[int, int]]] = {k: [] for k in at}
    for disk_id, offset, data in writes:
        write_at(session, vm, disk_id, offset, data)
        ranges[disk_id].append((offset, len(data)))
    return ranges


async def test_full_then_incremental_is_bit_identical_at_each_snapshot_and_moves_the_change(
    vcsim, session, vm, chain
):
    set_cbt(session, vm, True)
    first, full_files = await full_point(vcsim, chain, "chain-full")
    assert (first.mode, first.mode_reason) == ("full", "no previous point")
    at_full = {d.disk_id: disk_content(session, vm, d) for d in vcsim.disks}
    written = scatter_writes(session, vm, at_full)

    overlays = {k: chain.create(f"{k}-incr.qcow2", backing=p) for k, p in full_files.items()}
    prev = {o.disk_id: PreviousDisk(o.change_id, o.capacity) for o in first.disks}
    second = await backup_vm(
        vcsim.params(), vcsim.vm, chain.serve_all(overlays), "chain-incr",
        mode="incremental", changed_since=prev,
    )  # fmt: skip
    chain.stop_all()
    assert (second.mode, second.mode_reason) == ("incremental", None)
    at_incr = {d.disk_id: disk_content(session, vm, d) for d in vcsim.disks}
    assert remaining_snapshots(vcsim) == []

    for d1, d2 in zip(first.disks, second.disks, strict=True):
        k = d1.disk_id
        assert chain.read(full_files[k]) == at_full[k], f"{k}: the full point changed"
        assert chain.read(overlays[k]) == at_incr[k], f"{k}: the incremental is not the disk"
        assert d1.checksum == blkhash(at_full[k])
        assert d1.change_id and d2.change_id and d2.change_id != d1.change_id
        # Never a missed change, and no more than CBT's 64 KiB areas around it.
        assert blocks_of(written[k]) <= blocks_of(d2.areas)
        moved = sum(n for _, n in d2.areas)
        assert moved <= len(blocks_of(written[k])) * CBT_BLOCK
        assert d2.bytes_copied <= moved
        new_data = sum(len(at_incr[k][o : o + n].replace(b"\0", b"")) for o, n in written[k])
        assert d2.bytes_copied >= new_data
        assert d2.changes["digest"] == changes_digest(at_incr[k], d2.areas)
        assert d2.changes["areas"] == len(d2.areas)
    assert second.disks[2].areas == [] and second.disks[2].bytes_copied == 0


async def test_a_fall_back_full_into_overlays_writes_the_whole_disk_zeroes_included(
    vcsim, session, vm, chain
):
    set_cbt(session, vm, True)
    first, full_files = await full_point(vcsim, chain, "fallback-full")
    at_full = {d.disk_id: disk_content(session, vm, d) for d in vcsim.disks}
    scatter_writes(session, vm, at_full)  # includes data turned to zeroes
    set_cbt(session, vm, False)
    set_cbt(session, vm, True)  # a reset: the old change ids mean nothing now
    overlays = {k: chain.create(f"{k}-fb.qcow2", backing=p) for k, p in full_files.items()}
    prev = {o.disk_id: PreviousDisk(o.change_id, o.capacity) for o in first.disks}
    second = await backup_vm(
        vcsim.params(), vcsim.vm, chain.serve_all(overlays), "fallback-next", changed_since=prev
    )
    chain.stop_all()
    assert (second.mode, second.mode_reason) == (
        "full", "change id of disk0 is from another CBT epoch"
    )  # fmt: skip
    for d in vcsim.disks:
        now = disk_content(session, vm, d)
        assert chain.read(overlays[d.disk_id]) == now, f"{d.disk_id}: old data shows through"
        out = next(o for o in second.disks if o.disk_id == d.disk_id)
        assert out.areas is None and out.checksum == blkhash(now)


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
