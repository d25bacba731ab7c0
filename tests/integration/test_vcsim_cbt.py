"""The lab simulator's changed block tracking (files/vcsim/simulator/cbt.go), through pyvmomi.

Every expectation is computed here from the disk files themselves (the datastore
directory is on this machine), never from what the simulator says.
"""

from __future__ import annotations

import itertools
import os
import random
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from pyVmomi import vim, vmodl

from sendense_tools.lab.seed import seed_vm
from sendense_tools.vsphere.connection import VsphereSession
from sendense_tools.vsphere.inventory import find_vm, split_datastore_file
from sendense_tools.vsphere.props import read_props, wait_task
from sendense_tools.vsphere.snapshots import SnapshotRef, create_snapshot, remove_snapshot

BLOCK = 64 << 10
MAX_AREAS = 64  # what the simulator returns at most per call
# VMware's form: "52 de c0 d9 3a 70 13 5b-21 5e 8b 46 1a 2b c9 0e/7"
CHANGE_ID_RE = re.compile(
    r"^(?P<uuid>[0-9a-f]{2}( [0-9a-f]{2}){7}-[0-9a-f]{2}( [0-9a-f]{2}){7})/(?P<seq>\d+)$"
)


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
    """Snapshots a test makes; removed at its end."""
    made: list[SnapshotRef] = []
    yield made
    for s in made:
        remove_snapshot(session, s)


def set_cbt(session: VsphereSession, vm: vim.VirtualMachine, on: bool) -> None:
    task = session.call(vm.ReconfigVM_Task, vim.vm.ConfigSpec(changeTrackingEnabled=on))
    wait_task(session, task, "set changeTrackingEnabled")


def snapshot(session, vm, snaps: list[SnapshotRef], name: str) -> SnapshotRef:
    snap = create_snapshot(session, vm, name)
    snaps.append(snap)
    return snap


def snapshot_disks(session, obj) -> dict[int, vim.vm.device.VirtualDisk]:
    devices = read_props(session, obj, ["config.hardware.device"])["config.hardware.device"]
    return {d.key: d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)}


def change_ids(session, snap: SnapshotRef) -> dict[int, str]:
    return {k: d.backing.changeId for k, d in snapshot_disks(session, snap.obj).items()}


def flat_path(session, vm, disk: vim.vm.device.VirtualDisk) -> str:
    """The local -flat.vmdk of a disk (the simulator's datastore is a directory here)."""
    ds_name, rel = split_datastore_file(disk.backing.fileName)
    for ds in read_props(session, vm, ["datastore"])["datastore"]:
        p = read_props(session, ds, ["name", "info.url"])
        if p["name"] == ds_name:
            return os.path.join(urlsplit(p["info.url"]).path, rel[: -len(".vmdk")] + "-flat.vmdk")
    raise AssertionError(f"no datastore {ds_name}")


def nonzero_blocks(path: str, capacity: int) -> set[int]:
    out = set()
    with open(path, "rb") as f:
        for i in range((capacity + BLOCK - 1) // BLOCK):
            data = f.read(BLOCK)
            if data.strip(b"\0"):
                out.add(i)
    return out


def query(vm, snap: SnapshotRef, key: int, change_id: str, start: int = 0):
    return vm.QueryChangedDiskAreas(
        snapshot=snap.obj, deviceKey=key, startOffset=start, changeId=change_id
    )


def query_all(
    vm, snap, key: int, change_id: str, capacity: int
) -> tuple[list[tuple[int, int]], int]:
    """Every area over the whole capacity, looping on startOffset + length; and the call count."""
    areas: list[tuple[int, int]] = []
    start, calls = 0, 0
    while start < capacity:
        info = query(vm, snap, key, change_id, start)
        calls += 1
        assert info.startOffset == start and info.length > 0
        got = [(a.start, a.length) for a in info.changedArea or []]
        assert len(got) <= MAX_AREAS
        for s, n in got:
            assert start <= s and n > 0 and s + n <= start + info.length
        areas.extend(got)
        start += info.length
        assert calls < 10_000
    assert start == capacity
    return areas, calls


def blocks_of(areas: list[tuple[int, int]]) -> set[int]:
    return {b for s, n in areas for b in range(s // BLOCK, (s + n - 1) // BLOCK + 1)}


def assert_sorted_merged(areas: list[tuple[int, int]]) -> None:
    for (s1, n1), (s2, _) in itertools.pairwise(areas):
        assert s1 + n1 < s2, f"areas not sorted and merged: {(s1, n1)} then {s2}"


def test_star_gives_exactly_the_allocated_areas_of_each_seeded_disk(session, vm, vcsim, snaps):
    set_cbt(session, vm, True)
    snap = snapshot(session, vm, snaps, "cbt-star")
    disks = snapshot_disks(session, snap.obj)
    assert len(disks) == len(vcsim.disks)
    for key, disk in disks.items():
        capacity = disk.capacityInBytes
        areas, _ = query_all(vm, snap, key, "*", capacity)
        assert_sorted_merged(areas)
        expected = nonzero_blocks(flat_path(session, vm, disk), capacity)
        assert expected and len(expected) < capacity // BLOCK  # the seed has data and holes
        assert blocks_of(areas) == expected
        assert sum(n for _, n in areas) == len(expected) * BLOCK


def test_changed_since_covers_the_written_blocks_only_and_ids_outlive_their_snapshot(
    session, vm, snaps
):
    set_cbt(session, vm, True)
    first = snapshot(session, vm, snaps, "cbt-first")
    ids1 = change_ids(session, first)
    disks = snapshot_disks(session, first.obj)
    key, disk = sorted(disks.items())[0]
    other_keys = sorted(disks)[1:]
    capacity = disk.capacityInBytes
    path = flat_path(session, vm, disk)
    data = nonzero_blocks(path, capacity)
    holes = sorted(set(range(capacity // BLOCK)) - data)
    rng = random.Random("cbt")
    touched: set[int] = set()
    with open(path, "r+b") as f:
        for b in (holes[3], holes[len(holes) // 2]):  # new data in a hole
            os.pwrite(f.fileno(), rng.randbytes(BLOCK), b * BLOCK)
            touched.add(b)
        b = sorted(data)[len(data) // 2]  # data turned to zeroes
        os.pwrite(f.fileno(), bytes(BLOCK), b * BLOCK)
        touched.add(b)
        b = holes[-5]  # a small write crossing a 64 KiB border
        os.pwrite(f.fileno(), rng.randbytes(512), (b + 1) * BLOCK - 100)
        touched |= {b, b + 1}
    # The backup removes its snapshot before the next one: the id must stay usable.
    remove_snapshot(session, first)
    snaps.remove(first)
    second = snapshot(session, vm, snaps, "cbt-second")
    ids2 = change_ids(session, second)

    for k in disks:
        m1, m2 = CHANGE_ID_RE.match(ids1[k]), CHANGE_ID_RE.match(ids2[k])
        assert m1 and m2, (ids1[k], ids2[k])
        assert m1["uuid"] == m2["uuid"] and int(m2["seq"]) > int(m1["seq"])
    assert len({CHANGE_ID_RE.match(i)["uuid"] for i in ids2.values()}) == len(ids2)  # one per disk
    # The snapshot's devices were copied before the id was written: the VM's own
    # config does not carry it.
    assert all(not d.backing.changeId for d in snapshot_disks(session, vm).values())

    areas, _ = query_all(vm, second, key, ids1[key], capacity)
    assert_sorted_merged(areas)
    got = blocks_of(areas)
    assert touched <= got  # never a missed change
    assert got == touched  # and the simulator is exact: not the whole disk
    for k in other_keys:  # untouched disks: nothing changed
        assert query_all(vm, second, k, ids1[k], disks[k].capacityInBytes)[0] == []
    # Asking with the snapshot's own id: nothing changed.
    assert query_all(vm, second, key, ids2[key], capacity)[0] == []


def test_unknown_and_other_disks_change_ids_are_file_faults(session, vm, snaps):
    set_cbt(session, vm, True)
    snap = snapshot(session, vm, snaps, "cbt-faults")
    ids = change_ids(session, snap)
    k0, k1 = sorted(ids)[:2]
    uuid = CHANGE_ID_RE.match(ids[k0])["uuid"]
    for bad in (f"{uuid}/999999", "52 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00/1", "junk"):
        with pytest.raises(vim.fault.FileFault):
            query(vm, snap, k0, bad)
    with pytest.raises(vim.fault.FileFault):
        query(vm, snap, k0, ids[k1])
    with pytest.raises(vmodl.fault.InvalidArgument):
        query(vm, snap, k0, "*", start=snapshot_disks(session, snap.obj)[k0].capacityInBytes)


def test_cbt_off_and_on_starts_a_new_uuid_and_refuses_the_old_ids(session, vm, snaps):
    set_cbt(session, vm, True)
    before = snapshot(session, vm, snaps, "cbt-before-reset")
    old = change_ids(session, before)
    set_cbt(session, vm, False)
    off = snapshot(session, vm, snaps, "cbt-off")
    assert all(not i for i in change_ids(session, off).values())  # no tracking, no id
    with pytest.raises(vim.fault.FileFault):
        query(vm, off, sorted(old)[0], "*")
    set_cbt(session, vm, True)
    after = snapshot(session, vm, snaps, "cbt-after-reset")
    new = change_ids(session, after)
    for k in old:
        assert CHANGE_ID_RE.match(new[k])["uuid"] != CHANGE_ID_RE.match(old[k])["uuid"]
        with pytest.raises(vim.fault.FileFault):
            query(vm, after, k, old[k])
        query(vm, after, k, new[k])  # its own id is fine


def test_off_and_on_without_a_snapshot_between_still_resets(session, vm, snaps):
    set_cbt(session, vm, True)
    old = change_ids(session, snapshot(session, vm, snaps, "cbt-before-toggle"))
    set_cbt(session, vm, False)
    set_cbt(session, vm, True)
    after = snapshot(session, vm, snaps, "cbt-after-toggle")
    k = sorted(old)[0]
    with pytest.raises(vim.fault.FileFault):
        query(vm, after, k, old[k])


def test_start_offset_loop_covers_the_capacity_past_the_per_call_limit(session, vm, snaps):
    set_cbt(session, vm, True)
    first = snapshot(session, vm, snaps, "cbt-loop-base")
    ids = change_ids(session, first)
    disks = snapshot_disks(session, first.obj)
    key, disk = sorted(disks.items())[1]
    capacity = disk.capacityInBytes
    path = flat_path(session, vm, disk)
    # Every third block: separate areas, far more than one reply holds.
    written = set(range(1, capacity // BLOCK, 3))
    assert len(written) > 2 * MAX_AREAS
    with open(path, "r+b") as f:
        for b in written:
            f.seek(b * BLOCK)
            old = f.read(16)
            f.seek(b * BLOCK)
            f.write(bytes(x ^ 0xFF for x in old))  # surely different from before
    second = snapshot(session, vm, snaps, "cbt-loop")
    first_reply = query(vm, second, key, ids[key])
    assert len(first_reply.changedArea) == MAX_AREAS and first_reply.length < capacity
    areas, calls = query_all(vm, second, key, ids[key], capacity)
    assert calls >= len(written) // MAX_AREAS
    assert blocks_of(areas) == written
    # A start inside a changed block: areas begin at startOffset, none before it.
    mid = sorted(written)[100] * BLOCK + 1000
    info = query(vm, second, key, ids[key], mid)
    assert info.startOffset == mid and info.changedArea[0].start == mid
    assert all(a.start >= mid for a in info.changedArea)
    # "*" also honours the limit and the loop.
    star, star_calls = query_all(vm, second, key, "*", capacity)
    assert star_calls > 1 and blocks_of(star) == nonzero_blocks(path, capacity)


def test_folder_put_disks_are_tracked_and_a_recreated_disk_gets_a_new_uuid(session):
    """/folder PUT writes every byte (no holes): zero blocks are found by reading them.

    Uses the second VM: re-seeding replaces its disks (same keys and file names).
    """
    other = find_vm(session, "DC0_C0_RP0_VM1")
    made: list[SnapshotRef] = []
    try:
        seed_vm(session, "DC0_C0_RP0_VM1", [8 << 20, 4 << 20], seed="cbt-upload", upload=True)
        set_cbt(session, other, True)
        snap = snapshot(session, other, made, "cbt-uploaded")
        disks = snapshot_disks(session, snap.obj)
        assert len(disks) == 2
        for key, disk in disks.items():
            capacity = disk.capacityInBytes
            path = flat_path(session, other, disk)
            assert os.path.getsize(path) == capacity
            expected = nonzero_blocks(path, capacity)
            assert 0 < len(expected) < capacity // BLOCK
            assert blocks_of(query_all(other, snap, key, "*", capacity)[0]) == expected
        old = change_ids(session, snap)
        # seed_vm removes the snapshots, then destroys and re-creates the disks.
        made.clear()
        seed_vm(session, "DC0_C0_RP0_VM1", [8 << 20, 4 << 20], seed="cbt-again", upload=True)
        again = snapshot(session, other, made, "cbt-recreated")
        new = change_ids(session, again)
        assert sorted(new) == sorted(old)  # the simulator reuses the keys
        for k in old:
            assert CHANGE_ID_RE.match(new[k])["uuid"] != CHANGE_ID_RE.match(old[k])["uuid"]
            with pytest.raises(vim.fault.FileFault):
                query(other, again, k, old[k])
    finally:
        for s in made:
            remove_snapshot(session, s)
