"""A backup the hub stopped (or lost in a crash) under a copying node, settled at its next start.

The node may finish its copy while the hub is down: its final report (from its GET answer or
its own PUT) is then taken and verified like any other; otherwise the job fails as before.
Real hub JobManager, real qemu-nbd exports and qcow2 images; the node is the scripted stand-in.
"""

from __future__ import annotations

import asyncio

from tests.integration.hub.conftest import MiB


async def _copied_then_stopped(h, vm: str) -> tuple[str, list[dict]]:
    h.node.vms[vm] = [16 * MiB]
    code, record = await h.call("POST", "/api/v1/backups", {"vm": vm, "node": "node1"})
    assert code == 201, record
    disks = await h.copy(record["id"])
    await h.hub.jobs.shutdown()
    assert (await h.record(record["id"]))["status"] == "running"
    return record["id"], disks


async def _until(done, what: str) -> None:
    for _ in range(600):
        if done():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(what)


def _completed(disks: list[dict], phase: str = "done") -> dict:
    return {"status": "completed", "phase": phase, "vm": "x", "snapshot": "snapshot-1",
            "error": None, "disks": disks}  # fmt: skip


async def test_a_copy_the_node_completed_while_the_hub_was_stopped_is_kept(make_hub):
    h = await make_hub(ports=4)
    backup_id, disks = await _copied_then_stopped(h, "web01")
    h.node.jobs[backup_id] = _completed(disks)
    assert await h.hub.jobs.reconcile() == []
    record = await h.wait_status(backup_id)
    assert (record["status"], record["error"]) == ("completed", None)
    assert record["disk_results"][0]["sha256_qcow2"] == disks[0]["sha256"]
    _, verified = await h.call("POST", f"/api/v1/backups/{backup_id}/verify", {})
    assert verified["ok"], verified
    assert backup_id not in h.node.cancels


async def test_the_nodes_own_final_report_after_the_restart_is_taken(make_hub):
    h = await make_hub(ports=4)
    backup_id, disks = await _copied_then_stopped(h, "web02")
    # Still removing its snapshot when the hub asks; then its outbox delivers the report.
    h.node.jobs[backup_id] = {"status": "running", "phase": "removing_snapshot", "disks": disks}
    await h.hub.jobs.reconcile()
    await _until(lambda: backup_id in h.node.asks, "the hub never asked the node")
    report = {"status": "completed", "snapshot": "snapshot-1", "error": None, "disks": disks}
    code, body = await h.call(
        "PUT", f"/api/v1/backups/{backup_id}/progress", report, token=h.tokens["node1"]
    )
    assert code == 202, body
    assert (await h.wait_status(backup_id))["status"] == "completed"


async def test_a_copy_the_node_had_not_finished_fails_and_the_node_is_told(make_hub, tmp_path):
    h = await make_hub(ports=4)
    h.node.vms["web03"] = [16 * MiB]
    _, record = await h.call("POST", "/api/v1/backups", {"vm": "web03", "node": "node1"})
    backup_id = record["id"]
    h.node.jobs[backup_id] = {"status": "running", "phase": "copying", "disks": []}
    await h.hub.jobs.shutdown()
    await h.hub.jobs.reconcile()
    record = await h.wait_status(backup_id)
    assert (record["status"], record["error"]) == ("failed", "hub stopped")
    await _until(lambda: backup_id in h.node.cancels, "the node was never told to cancel")
    assert not (tmp_path / "repository" / "web03").exists()


async def test_a_completed_report_with_wrong_checksums_still_fails(make_hub):
    h = await make_hub(ports=4)
    backup_id, disks = await _copied_then_stopped(h, "web04")
    disks[0]["sha256"] = "0" * 64
    h.node.jobs[backup_id] = _completed(disks)
    await h.hub.jobs.reconcile()
    record = await h.wait_status(backup_id)
    assert record["status"] == "failed" and record["error"], record
