"""Records survive in SQLite; reconciliation stops a real leftover qemu-nbd and only that."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from sendense_tools.config import parse_config
from sendense_tools.hub.allocator import PortAllocator
from sendense_tools.hub.config import HubConfig
from sendense_tools.hub.exports import ExportOptions
from sendense_tools.hub.jobs import JobManager, safe_name
from sendense_tools.hub.store import Store
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
    assert store.allocations() == [{"port": 20001, "job_id": "j1", "disk_id": "disk0", "pid": None}]
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
        store.set_pid(lo, leftover.pid)
        store.set_pid(lo + 1, bystander.pid)
        store.set_status("j1", "running")
        config = parse_config({"state": {"db": str(tmp_path / "hub.db")},
                               "repository": {"path": str(tmp_path)}}, HubConfig)  # fmt: skip
        jobs = JobManager(config, store, PortAllocator((lo, lo + 1)), ExportOptions(), {})
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


@pytest.mark.parametrize(
    ("name", "expected"),
    [("web01", "web01"), ("../etc", "_etc"), ("a/b c", "a_b_c"), ("...", "vm"), ("ü", "_")],
)
def test_vm_names_become_safe_path_components(name, expected):
    assert safe_name(name) == expected
