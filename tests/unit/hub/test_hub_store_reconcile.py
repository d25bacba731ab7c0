"""Records survive in SQLite; reconciliation stops a real leftover qemu-nbd and only that."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
import time

import pytest

from sendense_tools.config import parse_config
from sendense_tools.hub.allocator import SlotAllocator
from sendense_tools.hub.config import HubConfig
from sendense_tools.hub.jobs import JobManager
from sendense_tools.hub.options import ExportOptions
from sendense_tools.hub.store import Store
from sendense_tools.hub.vminfo import safe_name
from tests.fixtures.ports import free_port_range, port_is_listening


def disk(i: int, port: int, path: str) -> dict:
    return {"disk_id": f"disk{i}", "capacity": 1 << 20, "nbd_port": port,
            "export_name": f"e{i}", "qcow2_path": path}  # fmt: skip


def test_record_shape_and_progress(tmp_path):
    store = Store(tmp_path / "hub.db")
    store.create_job({"id": "j1", "vm": "web", "node": "n1", "nbd_targets": "disk0:nbd://x"},
                     [disk(0, 20001, "/r/d0.qcow2")])  # fmt: skip
    store.record_progress("j1", "snap-1", [{"disk_id": "disk0", "bytes_copied": 5,
                                            "bytes_total": 9, "sha256": "ab" * 32}])  # fmt: skip
    store.set_status("j1", "completed")
    store.close()
    store = Store(tmp_path / "hub.db")
    record = store.record("j1")
    assert record["status"] == "completed" and record["finished_at"]
    assert record["snapshot"] == "snap-1"
    assert record["nbd_targets_string"] == "disk0:nbd://x"
    assert record["disk_results"][0]["bytes_copied"] == 5
    assert record["disk_results"][0]["sha256"] == "ab" * 32
    assert store.allocations() == [
        {"node": "n1", "port": 20001, "job_id": "j1", "disk_id": "disk0", "pid": None}
    ]
    assert store.record("nope") is None
    store.close()


def test_reconcile_stops_leftover_qemu_nbd_frees_ports_and_fails_jobs(tmp_path):
    lo, _ = free_port_range(2)
    image = tmp_path / "d0.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    leftover = subprocess.Popen(
        ["qemu-nbd", "--persistent", "-b", "127.0.0.1", "-p", str(lo), "-x", "e0", "-f", "qcow2",
         str(image)]
    )  # fmt: skip
    # A live process with a recorded pid that is not qemu-nbd: a reused pid must survive.
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        for _ in range(200):
            if port_is_listening(lo):
                break
            time.sleep(0.05)
        store = Store(tmp_path / "hub.db")
        store.create_job({"id": "j1", "vm": "web", "node": "n1", "nbd_targets": ""},
                         [disk(0, lo, str(image)), disk(1, lo + 1, str(image))])  # fmt: skip
        store.set_pid("n1", lo, leftover.pid)
        store.set_pid("n1", lo + 1, bystander.pid)
        store.set_status("j1", "running")
        config = parse_config({"state": {"db": str(tmp_path / "hub.db")},
                               "repository": {"path": str(tmp_path)}}, HubConfig)  # fmt: skip
        jobs = JobManager(config, store, SlotAllocator((lo, lo + 1), 10), ExportOptions(), {})
        (tmp_path / "nbd-keys" / "j1").mkdir(parents=True)
        assert asyncio.run(jobs.reconcile()) == ["j1"]
        assert leftover.wait(10) is not None
        assert bystander.poll() is None
        assert store.allocations() == []
        assert store.record("j1")["status"] == "failed"
        assert store.record("j1")["error"] == "hub restarted"
        assert list((tmp_path / "nbd-keys").iterdir()) == []
        store.close()
    finally:
        for proc in (leftover, bystander):
            proc.kill()
            proc.wait()


def test_two_nodes_hold_the_same_slot_and_release_their_own(tmp_path):
    store = Store(tmp_path / "hub.db")
    for node in ("a", "b"):
        store.create_job({"id": f"j-{node}", "vm": "web", "node": node, "nbd_targets": ""},
                         [disk(0, 10100, "/r/d0.qcow2")])  # fmt: skip
    store.set_pid("b", 10100, 42)
    assert [(r["node"], r["port"], r["pid"]) for r in store.allocations()] == [
        ("a", 10100, None),
        ("b", 10100, 42),
    ]
    assert [r["job_id"] for r in store.allocations(node="b")] == ["j-b"]
    store.release_slot("a", 10100)
    assert [r["node"] for r in store.allocations()] == ["b"]
    store.close()


def _old_database(tmp_path, more_sql: str = ""):
    """hub.db as the first release wrote it, with one running job j1 of node n1."""
    db = tmp_path / "hub.db"
    old = sqlite3.connect(db)
    old.executescript(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, vm TEXT NOT NULL, node TEXT NOT NULL,"
        " status TEXT NOT NULL, created_at TEXT NOT NULL, finished_at TEXT, error TEXT,"
        " snapshot TEXT, nbd_targets TEXT NOT NULL DEFAULT '', tls_username TEXT, key_dir TEXT);"
        "INSERT INTO jobs (id, vm, node, status, created_at) VALUES ('j1', 'web', 'n1',"
        " 'running', '2026-01-01T00:00:00+00:00');" + more_sql
    )
    old.commit()
    old.close()
    return db


def test_a_database_from_before_per_node_slots_keeps_its_allocations(tmp_path):
    db = _old_database(
        tmp_path,
        "CREATE TABLE allocations (port INTEGER PRIMARY KEY, job_id TEXT NOT NULL,"
        " disk_id TEXT NOT NULL, pid INTEGER);"
        "INSERT INTO allocations VALUES (10100, 'j1', 'disk0', 4242);",
    )
    store = Store(db)
    assert store.allocations() == [
        {"node": "n1", "port": 10100, "job_id": "j1", "disk_id": "disk0", "pid": 4242}
    ]
    store.close()


def test_reconcile_finds_a_leftover_export_on_a_node_socket(tmp_path):
    socket_dir = tmp_path / "nbd"
    (socket_dir / "n1").mkdir(parents=True)
    sock = socket_dir / "n1" / "10100.sock"
    stale = socket_dir / "n1" / "10101.sock"
    stale.touch()  # what a SIGKILLed qemu-nbd leaves
    image = tmp_path / "d0.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    leftover = subprocess.Popen(
        ["qemu-nbd", "--persistent", "-k", str(sock), "-x", "e0", "-f", "qcow2", str(image)]
    )
    try:
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.05)
        store = Store(tmp_path / "hub.db")
        store.create_job({"id": "j1", "vm": "web", "node": "n1", "nbd_targets": ""},
                         [disk(0, 10100, str(image))])  # fmt: skip
        store.set_pid("n1", 10100, leftover.pid)
        store.set_status("j1", "running")
        config = parse_config({"state": {"db": str(tmp_path / "hub.db")},
                               "repository": {"path": str(tmp_path)},
                               "nbd": {"socket_dir": str(socket_dir)}}, HubConfig)  # fmt: skip
        jobs = JobManager(config, store, SlotAllocator((10100, 10200), 10), ExportOptions(), {})
        assert asyncio.run(jobs.reconcile()) == ["j1"]
        assert leftover.wait(10) is not None
        assert store.allocations() == []
        assert list((socket_dir / "n1").iterdir()) == []
        store.close()
    finally:
        leftover.kill()
        leftover.wait()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("web01", "web01"), ("../etc", "_etc"), ("a/b c", "a_b_c"), ("...", "vm"), ("ü", "_")],
)
def test_vm_names_become_safe_path_components(name, expected):
    assert safe_name(name) == expected


def test_a_database_from_before_job_phases_gets_the_column(tmp_path):
    db = _old_database(tmp_path)
    store = Store(db)
    assert store.finalizing("j1") is False
    store.record_progress("j1", None, [], phase="finalizing")
    assert store.finalizing("j1") is True
    store.set_status("j1", "completed")
    assert store.finalizing("j1") is False
    assert store.record("j1")["status"] == "completed"
    store.close()


def test_reconcile_verifies_a_finalizing_job_again_and_fails_the_others(tmp_path):
    image = tmp_path / "web" / "j1" / "disk0.qcow2"
    image.parent.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    zeros = hashlib.sha256(bytes(1 << 20)).hexdigest()
    store = Store(tmp_path / "hub.db")
    for job_id in ("j1", "j2"):
        path = tmp_path / "web" / job_id / "disk0.qcow2"
        store.create_job({"id": job_id, "vm": "web", "node": "n1", "nbd_targets": ""},
                         [disk(0, 10100 + int(job_id[1]), str(path))])  # fmt: skip
        store.set_status(job_id, "running")
    store.record_progress("j1", None, [{"disk_id": "disk0", "bytes_copied": 1 << 20,
                                        "bytes_total": 1 << 20, "sha256": zeros}],
                          phase="finalizing")  # fmt: skip
    (tmp_path / "web" / "j2").mkdir()
    config = parse_config({"state": {"db": str(tmp_path / "hub.db")},
                           "repository": {"path": str(tmp_path)},
                           "nbd": {"socket_dir": str(tmp_path / "nbd")}}, HubConfig)  # fmt: skip
    jobs = JobManager(config, store, SlotAllocator((10100, 10200), 10), ExportOptions(), {})

    async def restart() -> list[str]:
        failed = await jobs.reconcile()
        await asyncio.gather(*jobs._tasks)
        return failed

    assert asyncio.run(restart()) == ["j2"]
    assert (store.record("j1")["status"], store.record("j1")["error"]) == ("completed", None)
    assert store.record("j1")["disk_results"][0]["sha256_qcow2"] == zeros
    assert store.record("j2")["error"] == "hub restarted"
    # The failed job's files are gone, the completed one's stay.
    assert image.is_file() and not (tmp_path / "web" / "j2").exists()
    store.close()


def test_a_database_from_before_incrementals_keeps_its_records_and_sha256(tmp_path):
    db = _old_database(
        tmp_path,
        "CREATE TABLE disks (job_id TEXT NOT NULL, idx INTEGER NOT NULL, disk_id TEXT NOT NULL,"
        " capacity INTEGER NOT NULL, nbd_port INTEGER, export_name TEXT, qcow2_path TEXT,"
        " bytes_copied INTEGER NOT NULL DEFAULT 0, bytes_total INTEGER NOT NULL DEFAULT 0,"
        " sha256 TEXT, sha256_qcow2 TEXT, PRIMARY KEY (job_id, disk_id));"
        "INSERT INTO disks (job_id, idx, disk_id, capacity, sha256) VALUES"
        " ('j1', 0, 'disk0', 1048576, '" + "ab" * 32 + "');",
    )
    store = Store(db)
    record = store.record("j1")
    assert (record["mode"], record["mode_reason"], record["parent"]) == (None, None, None)
    assert record["disk_results"][0]["sha256"] == "ab" * 32
    assert (record["disk_results"][0]["change_id"], record["disk_results"][0]["checksum"]) == (
        None,
        None,
    )
    checksum = {"algorithm": "blake2b", "block_size": 4 << 20, "checksum": "cd" * 32}
    disk = {"disk_id": "disk0", "bytes_copied": 1, "bytes_total": 1, "change_id": "52 aa/7",
            "checksum": checksum}  # fmt: skip
    # Without a parent the hub's decision (a full) stands: the node's mode is not taken.
    store.record_progress("j1", None, [disk], mode=("incremental", None))
    assert store.record("j1")["mode"] is None
    store.set_parent("j1", "j0")
    store.record_progress("j1", None, [disk], mode=("full", "CBT was just enabled"))
    record = store.record("j1")
    assert (record["mode"], record["mode_reason"], record["parent"]) == (
        "full", "CBT was just enabled", "j0",
    )  # fmt: skip
    assert record["disk_results"][0]["change_id"] == "52 aa/7"
    assert record["disk_results"][0]["checksum"] == checksum
    assert record["disk_results"][0]["sha256"] == "ab" * 32
    store.close()


def test_a_chain_lists_the_full_first_and_the_point_last(tmp_path):
    store = Store(tmp_path / "hub.db")
    parent = None
    for job_id in ("full", "inc1", "inc2"):
        store.create_job({"id": job_id, "vm": "web", "node": "n1", "nbd_targets": "",
                          "parent": parent}, [])  # fmt: skip
        store.set_status(job_id, "completed")
        parent = job_id
    assert [r["id"] for r in store.chain("inc2")] == ["full", "inc1", "inc2"]
    assert [r["id"] for r in store.chain("inc1")] == ["full", "inc1"]
    assert [r["id"] for r in store.chain("full")] == ["full"]
    store.close()
