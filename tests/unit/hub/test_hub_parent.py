"""Which point a new backup builds on (hub/parent.py), against a real store."""

from __future__ import annotations

import itertools

import pytest

from sendense_tools.hub.errors import NoParent
from sendense_tools.hub.parent import choose_parent
from sendense_tools.hub.store import Store

MiB = 1 << 20
SLOTS = itertools.count(10100)


def disks(*capacities: int) -> list[dict]:
    return [{"disk_id": f"disk{i}", "capacity": c} for i, c in enumerate(capacities)]


def point(store: Store, job_id: str, status: str, *capacities: int, node: str = "n1",
          vm: str = "web", change_ids: bool = True) -> None:  # fmt: skip
    specs = [
        {"disk_id": d["disk_id"], "capacity": d["capacity"], "nbd_port": next(SLOTS),
         "export_name": None, "qcow2_path": f"/r/{job_id}/{d['disk_id']}.qcow2"}
        for d in disks(*capacities)
    ]  # fmt: skip
    store.create_job({"id": job_id, "vm": vm, "node": node, "nbd_targets": ""}, specs)
    store.record_progress(
        job_id,
        None,
        [{"disk_id": s["disk_id"], "bytes_copied": 0, "bytes_total": 0,
          "change_id": f"52 aa/{job_id}-{s['disk_id']}" if change_ids else None} for s in specs],
    )  # fmt: skip
    store.set_status(job_id, status)
    store.release_allocations(job_id)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "hub.db")
    yield s
    s.close()


def test_no_point_means_a_full_and_says_so(store):
    chosen = choose_parent(store, "n1", "web", disks(MiB), "auto")
    assert (chosen.parent, chosen.reason) == (None, "no previous completed point")


def test_the_newest_completed_point_is_the_parent_with_its_images_and_change_ids(store):
    point(store, "a", "completed", MiB, 2 * MiB)
    point(store, "b", "completed", MiB, 2 * MiB)
    chosen = choose_parent(store, "n1", "web", disks(MiB, 2 * MiB), "auto")
    assert chosen.reason is None and chosen.parent is not None
    assert chosen.parent.job_id == "b"
    assert chosen.parent.qcow2 == {"disk0": "/r/b/disk0.qcow2", "disk1": "/r/b/disk1.qcow2"}
    assert chosen.parent.change_ids == {"disk0": "52 aa/b-disk0", "disk1": "52 aa/b-disk1"}


@pytest.mark.parametrize("status", ["failed", "cancelled", "running", "pending"])
def test_a_point_that_did_not_complete_is_never_the_parent(store, status):
    point(store, "a", "completed", MiB)
    point(store, "b", status, MiB)
    chosen = choose_parent(store, "n1", "web", disks(MiB), "auto")
    assert chosen.parent is not None and chosen.parent.job_id == "a"


def test_other_nodes_and_vms_points_are_never_the_parent(store):
    point(store, "a", "completed", MiB, node="n2")
    point(store, "b", "completed", MiB, vm="db")
    chosen = choose_parent(store, "n1", "web", disks(MiB), "auto")
    assert (chosen.parent, chosen.reason) == (None, "no previous completed point")


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (disks(MiB, 2 * MiB, MiB), "disk2 was added since point a"),
        (disks(MiB), "disk1 was removed since point a"),
        (disks(MiB, 4 * MiB), f"disk1 was resized since point a ({2 * MiB} -> {4 * MiB} bytes)"),
    ],
)
def test_disks_that_differ_mean_a_full_with_the_reason(store, now, reason):
    point(store, "a", "completed", MiB, 2 * MiB)
    chosen = choose_parent(store, "n1", "web", now, "auto")
    assert (chosen.parent, chosen.reason) == (None, reason)
    with pytest.raises(NoParent) as refused:
        choose_parent(store, "n1", "web", now, "incremental")
    assert str(refused.value) == f"no incremental backup of VM 'web' possible: {reason}"


def test_a_point_without_change_ids_cannot_carry_an_incremental(store):
    point(store, "a", "completed", MiB, change_ids=False)
    chosen = choose_parent(store, "n1", "web", disks(MiB), "auto")
    assert (chosen.parent, chosen.reason) == (None, "point a has no change id for disk0")


def test_a_full_asked_for_has_no_parent(store):
    point(store, "a", "completed", MiB)
    chosen = choose_parent(store, "n1", "web", disks(MiB), "full")
    assert (chosen.parent, chosen.reason) == (None, "full requested")


def test_incremental_without_any_point_is_refused(store):
    with pytest.raises(NoParent, match="no previous completed point"):
        choose_parent(store, "n1", "web", disks(MiB), "incremental")
