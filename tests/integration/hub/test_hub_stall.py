"""A job without progress reports for [jobs] stall_timeout: the hub asks the node and acts."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import MiB, assert_left_nothing

pytestmark = pytest.mark.asyncio

STALL = 0.3


async def stalled_backup(h) -> dict:
    h.node.vms["web01"] = [16 * MiB, 16 * MiB]
    code, record = await h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"})
    assert code == 201, record
    return record


async def asked(h, backup_id: str, times: int) -> None:
    async with asyncio.timeout(60):
        while True:
            if h.node.asks.count(backup_id) >= times:
                return
            await asyncio.sleep(0.02)


async def test_a_running_node_job_keeps_the_hub_job_running(make_hub, tmp_path):
    h = await make_hub(ports=2, stall_timeout=STALL)
    record = await stalled_backup(h)
    h.node.jobs[record["id"]] = {"status": "running", "disks": []}
    await asked(h, record["id"], 3)
    assert (await h.record(record["id"]))["status"] == "running"
    await h.finish(record["id"])
    final = await h.wait_status(record["id"])
    assert final["status"] == "completed", final["error"]
    await assert_left_nothing(h, tmp_path, final)


async def test_a_node_that_does_not_know_the_job_fails_it(make_hub, tmp_path):
    h = await make_hub(ports=2, stall_timeout=STALL)
    record = await stalled_backup(h)
    final = await h.wait_status(record["id"])
    assert final["status"] == "failed"
    assert final["error"] == (f"node node1 does not know backup {record['id']} (node restarted?)")
    await assert_left_nothing(h, tmp_path, final)


async def test_an_unreachable_node_fails_the_job_saying_for_how_long(make_hub, tmp_path):
    h = await make_hub(ports=2, stall_timeout=STALL)
    record = await stalled_backup(h)
    await h.node.__aexit__(None, None, None)
    h.node._runner = None
    final = await h.wait_status(record["id"])
    assert final["status"] == "failed"
    assert final["error"].startswith("no progress report for "), final["error"]
    assert "node node1 is unreachable" in final["error"]
    await assert_left_nothing(h, tmp_path, final)


async def test_a_node_that_finished_is_finalized_as_if_its_report_had_come(make_hub, tmp_path):
    h = await make_hub(ports=2, stall_timeout=STALL)
    record = await stalled_backup(h)
    # The node copied everything, and its final report was lost.
    disks = await h.copy(record["id"])
    h.node.jobs[record["id"]] = {"status": "completed", "snapshot": "snapshot-1", "disks": disks}
    final = await h.wait_status(record["id"])
    assert final["status"] == "completed", final["error"]
    assert all(d["sha256"] == d["sha256_qcow2"] for d in final["disk_results"])
    await assert_left_nothing(h, tmp_path, final)
    code, verified = await h.call("POST", f"/api/v1/backups/{record['id']}/verify")
    assert code == 200 and verified["ok"] is True


async def test_a_node_that_finished_without_every_checksum_fails_the_job(make_hub, tmp_path):
    h = await make_hub(ports=2, stall_timeout=STALL)
    record = await stalled_backup(h)
    disks = await h.copy(record["id"])
    disks[1]["sha256"] = None
    h.node.jobs[record["id"]] = {"status": "completed", "disks": disks}
    final = await h.wait_status(record["id"])
    assert final["status"] == "failed"
    assert "without the checksum of disk1" in final["error"], final["error"]
    await assert_left_nothing(h, tmp_path, final)


@pytest.mark.parametrize("status", ["failed", "cancelled"])
async def test_a_node_that_failed_fails_the_job_with_its_reason(make_hub, tmp_path, status):
    h = await make_hub(ports=2, stall_timeout=STALL)
    record = await stalled_backup(h)
    h.node.jobs[record["id"]] = {"status": status, "error": "snapshot removal failed"}
    final = await h.wait_status(record["id"])
    assert (final["status"], final["error"]) == ("failed", "node node1: snapshot removal failed")
    await assert_left_nothing(h, tmp_path, final)
