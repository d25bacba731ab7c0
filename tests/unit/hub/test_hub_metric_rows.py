"""What /metrics reads from a real hub database: points, job counts, prune runs.

prune_runs rows are written with plain SQL here: the prune that writes them is
another module (engineer B's), and the table is the contract between the two.
"""

from __future__ import annotations

import sqlite3

from sendense_tools.hub.metric_rows import PruneTotals
from sendense_tools.hub.store import Store


def backup(store: Store, job_id: str, node: str, vm: str, status: str, disks: int = 1,
           policy: str | None = None) -> None:  # fmt: skip
    store.create_job(
        {"id": job_id, "vm": vm, "node": node, "nbd_targets": "", "policy": policy},
        [{"disk_id": f"disk{i}", "capacity": 512, "nbd_port": 10100 + i, "export_name": "e",
          "qcow2_path": f"/r/{vm}/{job_id}/disk{i}.qcow2"} for i in range(disks)],
    )  # fmt: skip
    store.release_allocations(job_id)
    if status != "pending":
        store.set_status(job_id, status)


def prune_run(db: sqlite3.Connection, run_id: str, status: str, dry: bool, removed: int,
              merged: int, finished: str | None) -> None:  # fmt: skip
    db.execute(
        "INSERT INTO prune_runs (id, started_at, finished_at, dry_run, status, points_removed,"
        " merged_bytes) VALUES (?, '2026-12-01T00:00:00+00:00', ?, ?, ?, ?, ?)",
        (run_id, finished, int(dry), status, removed, merged),
    )


def test_completed_disks_are_every_completed_points_disks_grouped_by_vm(tmp_path):
    store = Store(tmp_path / "hub.db")
    backup(store, "b-full", "n1", "web", "completed", disks=2, policy="nightly")
    backup(store, "a-failed", "n1", "web", "failed")
    backup(store, "c-inc", "n1", "web", "completed")
    backup(store, "d", "n2", "db", "completed")
    rows = store.completed_disks()
    assert [(r["node"], r["vm"], r["id"], r["qcow2_path"]) for r in rows] == [
        ("n1", "web", "b-full", "/r/web/b-full/disk0.qcow2"),
        ("n1", "web", "b-full", "/r/web/b-full/disk1.qcow2"),
        ("n1", "web", "c-inc", "/r/web/c-inc/disk0.qcow2"),
        ("n2", "db", "d", "/r/db/d/disk0.qcow2"),
    ]
    assert rows[0]["policy"] == "nightly" and rows[2]["policy"] is None
    assert all(r["finished_at"] for r in rows)
    assert {r["node"] for r in store.completed_disks("n2")} == {"n2"}
    assert store.completed_disks("n3") == []


def test_job_counts_cover_every_status_of_both_kinds(tmp_path):
    store = Store(tmp_path / "hub.db")
    backup(store, "a", "n1", "web", "completed")
    backup(store, "b", "n1", "web", "failed")
    backup(store, "c", "n2", "db", "running")
    store.create_restore(
        {"id": "r", "backup_id": "a", "node": "n1", "vm": "web", "name": "web-r",
         "datastore": "ds", "folder": None, "resource_pool": None, "power_on": False,
         "warnings": [], "chain": ["a"]},
        [{"disk_id": "disk0", "capacity": 512, "checksum": None, "nbd_port": 10150}],
    )  # fmt: skip
    every = store.job_counts()
    assert len(every) == 10 and sum(every.values()) == 4
    assert every[("backup", "completed")] == every[("backup", "failed")] == 1
    assert every[("backup", "running")] == every[("restore", "pending")] == 1
    mine = store.job_counts("n2")
    assert mine[("backup", "running")] == 1 and sum(mine.values()) == 1


def test_prune_totals_count_finished_runs_and_only_real_removals(tmp_path):
    store = Store(tmp_path / "hub.db")
    assert store.prune_totals() == PruneTotals(
        {("completed", False): 0, ("completed", True): 0, ("failed", False): 0,
         ("failed", True): 0}, 0, 0, None,
    )  # fmt: skip
    db = sqlite3.connect(tmp_path / "hub.db", isolation_level=None)
    prune_run(db, "p1", "completed", False, 3, 4096, "2026-12-01T05:10:00+00:00")
    prune_run(db, "p2", "completed", True, 9, 9999, "2026-12-01T06:00:00+00:00")
    # A failed run removed what it removed before it failed.
    prune_run(db, "p3", "failed", False, 1, 512, "2026-12-01T05:30:00+00:00")
    prune_run(db, "p4", "running", False, 2, 100, None)
    totals = store.prune_totals()
    assert totals.runs == {("completed", False): 1, ("completed", True): 1,
                           ("failed", False): 1, ("failed", True): 0}  # fmt: skip
    assert (totals.points_removed, totals.merged_bytes) == (3 + 1 + 2, 4096 + 512 + 100)
    assert totals.last_finished_at == "2026-12-01T06:00:00+00:00"
