"""End-to-end backups through a real hub, real qemu-nbd and a stand-in node API."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import nbd
import pytest

from tests.fixtures.ports import port_is_listening

from .conftest import MiB, open_export, targets

pytestmark = pytest.mark.asyncio


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def assert_nothing_held(h, pids: list[int]) -> None:
    code, metrics = await h.call("GET", "/api/v1/nbd/metrics")
    assert code == 200
    assert metrics["allocated"] == 0
    assert metrics["available"] == metrics["total"]
    assert metrics["qemu_nbd_processes"] == 0
    code, ports = await h.call("GET", "/api/v1/nbd/ports")
    assert ports == []
    assert [p for p in pids if alive(p)] == []
    lo, hi = h.port_range
    assert [p for p in range(lo, hi + 1) if port_is_listening(p)] == []


async def pids_of(h, backup_id: str) -> list[int]:
    _, rows = await h.call("GET", "/api/v1/nbd/ports")
    return [r["pid"] for r in rows if r["job_id"] == backup_id]


async def test_three_disk_backup_exports_answer_with_multi_conn_and_completes(make_hub):
    h = await make_hub(ports=6)
    h.node.vms["web01"] = [64 * MiB, 128 * MiB, 32 * MiB]

    code, record = await h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"})
    assert code == 201, record
    assert record["status"] == "running"
    ports = [d["nbd_port"] for d in record["disk_results"]]
    lo, hi = h.port_range
    assert len(set(ports)) == 3 and all(lo <= p <= hi for p in ports)
    for d in record["disk_results"]:
        path = Path(d["qcow2_path"])
        assert path.parent.parent.name == "web01"
        assert await asyncio.to_thread(path.is_file)

    start = h.node.start_for(record["id"])
    uris = targets(start["nbd_targets"])
    assert list(uris) == ["disk0", "disk1", "disk2"]
    assert start["nbd_targets"] == record["nbd_targets_string"]

    def probe(uri: str) -> tuple[int, bool]:
        handle = open_export(h.hub_side(uri), start["nbd_tls"])
        result = handle.get_size(), handle.can_multi_conn()
        handle.shutdown()
        return result

    answers = [await asyncio.to_thread(probe, u) for u in uris.values()]
    assert answers == [(64 * MiB, True), (128 * MiB, True), (32 * MiB, True)]
    code, metrics = await h.call("GET", "/api/v1/nbd/metrics")
    assert (metrics["allocated"], metrics["qemu_nbd_processes"]) == (3, 3)
    pids = await pids_of(h, record["id"])

    await h.finish(record["id"])
    final = await h.wait_status(record["id"])
    assert final["status"] == "completed", final["error"]
    assert final["snapshot"] == "snapshot-1"
    assert all(d["sha256"] == d["sha256_qcow2"] for d in final["disk_results"])
    await assert_nothing_held(h, pids)

    code, verified = await h.call("POST", f"/api/v1/backups/{record['id']}/verify")
    assert code == 200 and verified["ok"] is True
    assert [d["match"] for d in verified["disks"]] == [True, True, True]


async def test_sha_mismatch_fails_naming_the_disk(make_hub):
    h = await make_hub(ports=4)
    h.node.vms["db01"] = [32 * MiB, 32 * MiB]
    _, record = await h.call("POST", "/api/v1/backups", {"vm": "db01", "node": "node1"})
    await h.finish(record["id"], corrupt="disk1")
    final = await h.wait_status(record["id"])
    assert final["status"] == "failed"
    assert "disk1" in final["error"] and "disk0" not in final["error"]
    # The record stays; the images of a point that failed do not.
    paths = [Path(d["qcow2_path"]) for d in final["disk_results"]]
    assert [await asyncio.to_thread(p.exists) for p in paths] == [False, False]
    code, verified = await h.call("POST", f"/api/v1/backups/{record['id']}/verify")
    assert code == 200 and verified["ok"] is False
    assert [d["match"] for d in verified["disks"]] == [False, False]
    assert all(d["error"] for d in verified["disks"])
    await assert_nothing_held(h, [])


async def test_node_reported_failure_is_recorded_and_frees_everything(make_hub):
    h = await make_hub(ports=2)
    h.node.vms["app01"] = [16 * MiB]
    _, record = await h.call("POST", "/api/v1/backups", {"vm": "app01", "node": "node1"})
    pids = await pids_of(h, record["id"])
    await h.finish(record["id"], status="failed")
    final = await h.wait_status(record["id"])
    assert final["status"] == "failed" and "source read failed" in final["error"]
    await assert_nothing_held(h, pids)


async def test_kill_9_of_one_qemu_nbd_fails_the_job_and_frees_everything(make_hub):
    h = await make_hub(ports=4)
    h.node.vms["web02"] = [16 * MiB, 16 * MiB, 16 * MiB]
    _, record = await h.call("POST", "/api/v1/backups", {"vm": "web02", "node": "node1"})
    pids = await pids_of(h, record["id"])
    assert len(pids) == 3 and all(alive(p) for p in pids)

    os.kill(pids[1], signal.SIGKILL)
    final = await h.wait_status(record["id"])
    assert final["status"] == "failed"
    assert "disk1" in final["error"] and "SIGKILL" in final["error"]
    assert h.node.cancels == [record["id"]]
    await assert_nothing_held(h, pids)


async def test_cancel_frees_everything_and_tells_the_node(make_hub):
    h = await make_hub(ports=4)
    h.node.vms["web03"] = [16 * MiB, 16 * MiB]
    _, record = await h.call("POST", "/api/v1/backups", {"vm": "web03", "node": "node1"})
    pids = await pids_of(h, record["id"])
    code, body = await h.call("POST", f"/api/v1/backups/{record['id']}/cancel")
    assert code == 200 and body["status"] == "cancelled"
    assert h.node.cancels == [record["id"]]
    await assert_nothing_held(h, pids)
    code, body = await h.call("POST", f"/api/v1/backups/{record['id']}/cancel")
    assert code == 409
    # The VM can be backed up again once the previous job is over.
    code, again = await h.call("POST", "/api/v1/backups", {"vm": "web03", "node": "node1"})
    assert code == 201, again


@pytest.mark.parametrize("listen", ["unix", "tcp"])
async def test_export_refuses_readers_without_the_jobs_psk(make_hub, listen):
    # TLS-PSK is off by default (the tunnel encrypts); turned on, it still guards
    # the exports in either layout.
    h = await make_hub(ports=4, tls_psk=True, listen=listen)
    h.node.vms["a"] = [16 * MiB]
    h.node.vms["b"] = [16 * MiB]
    _, rec_a = await h.call("POST", "/api/v1/backups", {"vm": "a", "node": "node1"})
    _, rec_b = await h.call("POST", "/api/v1/backups", {"vm": "b", "node": "node1"})
    start_a, start_b = h.node.start_for(rec_a["id"]), h.node.start_for(rec_b["id"])
    uri_a = h.hub_side(targets(start_a["nbd_targets"])["disk0"])
    assert start_a["nbd_tls"]["psk"] != start_b["nbd_tls"]["psk"]

    def attempt(tls: dict | None) -> str:
        try:
            handle = open_export(uri_a, tls)
        except nbd.Error as exc:
            return f"refused: {exc.string}"
        data = handle.pread(4096, 0)
        handle.shutdown()
        return f"read {len(data)}"

    assert (await asyncio.to_thread(attempt, None)).startswith("refused")
    assert (await asyncio.to_thread(attempt, start_b["nbd_tls"])).startswith("refused")
    wrong_key = {"username": start_a["nbd_tls"]["username"], "psk": start_b["nbd_tls"]["psk"]}
    assert (await asyncio.to_thread(attempt, wrong_key)).startswith("refused")
    assert await asyncio.to_thread(attempt, start_a["nbd_tls"]) == "read 4096"


async def test_only_completed_restore_points_stay_in_the_repository(make_hub, tmp_path):
    h = await make_hub(ports=8)
    for vm in ("ok01", "bad01", "gone01", "nodefail01", "web01"):
        h.node.vms[vm] = [16 * MiB]
    ids = {}
    for vm in ("ok01", "bad01", "gone01", "nodefail01"):
        code, record = await h.call("POST", "/api/v1/backups", {"vm": vm, "node": "node1"})
        assert code == 201, record
        ids[vm] = record["id"]
    # A second point of the same VM that fails: the VM's completed point stays.
    await h.finish(ids["ok01"])
    assert (await h.wait_status(ids["ok01"]))["status"] == "completed"
    _, again = await h.call("POST", "/api/v1/backups", {"vm": "ok01", "node": "node1"})
    await h.finish(again["id"], corrupt="disk0")
    await h.finish(ids["bad01"], corrupt="disk0")
    await h.call("POST", f"/api/v1/backups/{ids['gone01']}/cancel")
    await h.finish(ids["nodefail01"], status="failed")
    outcomes = [
        (await h.wait_status(i))["status"]
        for i in (again["id"], ids["bad01"], ids["gone01"], ids["nodefail01"])
    ]
    assert outcomes == ["failed", "failed", "cancelled", "failed"]
    # A job the hub stops while its node copies is left for the next start to settle with
    # the node; this node does not know it (404), so it fails then, and its images go.
    _, stopped = await h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"})
    await h.hub.jobs.shutdown()
    assert (await h.record(stopped["id"]))["status"] == "running"
    await h.hub.jobs.reconcile()
    assert (await h.wait_status(stopped["id"]))["status"] == "failed"

    repository = tmp_path / "repository"
    files = sorted(str(p.relative_to(repository)) for p in repository.rglob("*"))
    point = f"ok01/{ids['ok01']}"
    assert files == ["ok01", point, f"{point}/disk0.qcow2", f"{point}/disk0.qcow2.blocks"]
    # The records stay, with the reason.
    assert (await h.record(stopped["id"]))["error"] == "hub stopped"
    assert all([(await h.record(i))["error"] for i in ids.values() if i != ids["ok01"]])
