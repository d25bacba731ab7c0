"""Restore records in SQLite, the points they hold, and the hardware column's migration."""

from __future__ import annotations

import sqlite3

from sendense_tools.hub.store import Store

CHECKSUM = {"algorithm": "blake2b", "block_size": 4 << 20, "checksum": "ab" * 32}


def restore(store: Store, restore_id: str, chain: list[str]) -> None:
    store.create_restore(
        {"id": restore_id, "backup_id": chain[-1], "node": "n1", "vm": "web", "name": "new",
         "datastore": "ds", "folder": None, "resource_pool": None, "power_on": True,
         "warnings": ["from the hub"], "chain": chain},
        [{"disk_id": "disk0", "capacity": 9, "checksum": CHECKSUM, "nbd_port": 10100}],
    )  # fmt: skip


def test_a_restore_record_survives_a_restart_with_its_progress(tmp_path):
    store = Store(tmp_path / "hub.db")
    restore(store, "r-1", ["full", "inc"])
    assert store.allocations() == [
        {"node": "n1", "port": 10100, "job_id": "r-1", "disk_id": "disk0", "pid": None}
    ]
    disk = {"disk_id": "disk0", "bytes_written": 4, "bytes_total": 9, "checksum": CHECKSUM}
    store.restore_progress(
        "r-1", {"phase": "writing", "moref": "vm-7", "warnings": ["node's"], "disks": [disk]}
    )
    store.set_verified("r-1", {"disk0": True})
    store.end_restore("r-1", "completed")
    store.close()
    store = Store(tmp_path / "hub.db")
    record = store.restore("r-1")
    assert record is not None
    assert (record["status"], record["phase"], record["moref"], record["power_on"]) == (
        "completed", None, "vm-7", True,
    )  # fmt: skip
    assert record["warnings"] == ["from the hub", "node's"] and record["finished_at"]
    assert record["disks"] == [
        {"disk_id": "disk0", "capacity": 9, "bytes_written": 4, "bytes_total": 9,
         "expected_checksum": CHECKSUM, "checksum": CHECKSUM, "verified": True}
    ]  # fmt: skip
    assert store.restores(backup="inc") == [record] and store.restores(backup="full") == []
    store.close()


def test_points_in_use_are_every_point_of_a_running_restores_chain(tmp_path):
    store = Store(tmp_path / "hub.db")
    restore(store, "r-1", ["full", "inc"])
    store.release_allocations("r-1")
    restore(store, "r-2", ["other"])
    store.end_restore("r-2", "running")
    assert store.points_in_use() == {"full", "inc", "other"}
    assert store.active_restore_named("n1", "new") == "r-1"
    store.end_restore("r-1", "failed", "hub restarted")
    store.end_restore("r-2", "cancelled")
    assert store.points_in_use() == set()
    assert store.active_restores() == []
    assert store.restore("r-1")["error"] == "hub restarted"  # type: ignore[index]
    store.close()


def test_an_older_database_gains_the_hardware_column_and_its_points_show_none(tmp_path):
    db = sqlite3.connect(tmp_path / "hub.db")
    db.executescript(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, vm TEXT NOT NULL, node TEXT NOT NULL,"
        " status TEXT NOT NULL, created_at TEXT NOT NULL, finished_at TEXT, error TEXT,"
        " snapshot TEXT, nbd_targets TEXT NOT NULL DEFAULT '', tls_username TEXT,"
        " key_dir TEXT);"
        "INSERT INTO jobs (id, vm, node, status, created_at) VALUES"
        " ('old', 'web', 'n1', 'completed', '2026-01-01T00:00:00+00:00');"
    )
    db.close()
    store = Store(tmp_path / "hub.db")
    assert store.record("old")["hardware"] is None  # type: ignore[index]
    store.create_job({"id": "new", "vm": "web", "node": "n1", "nbd_targets": ""}, [])
    store.record_progress("new", None, [], hardware={"name": "web"})
    assert store.record("new")["hardware"] == {"name": "web"}  # type: ignore[index]
    store.close()
