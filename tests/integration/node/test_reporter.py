"""Running jobs report at least every heartbeat, also while nothing changes."""

from __future__ import annotations

import asyncio

from sendense_tools.node.job import DiskState, Job
from sendense_tools.node.reporter import HubReporter
from tests.fixtures.vcsim import remaining_snapshots
from tests.integration.node.conftest import TOKEN
from tests.integration.node.test_outbox import wait_for


async def test_a_job_with_nothing_new_still_reports_every_heartbeat(hub):
    await hub.up()
    reporter = HubReporter(hub.url, TOKEN, interval=0.01, heartbeat=0.1)
    job = Job("h-quiet", "vm0", "vm-1", {"disk0": DiskState("disk0", 4096)})
    following = asyncio.create_task(reporter.follow(job))
    try:
        await wait_for(lambda: len(hub.running("h-quiet")) >= 3, "3 heartbeats", within=60)
    finally:
        following.cancel()
    assert hub.running("h-quiet")[0]["disks"] == [
        {"disk_id": "disk0", "bytes_copied": 0, "bytes_total": 4096, "sha256": None,
         "change_id": None, "checksum": None, "changes": None, "areas": None}
    ]  # fmt: skip
    assert hub.running("h-quiet")[0]["mode"] is None  # not decided before the snapshot


async def test_vcenter_creating_the_snapshot_for_long_does_not_silence_the_job(
    slow_vcsim, hub, make_node, qemu_nbd_target
):
    await hub.up()
    node = await make_node(slow_vcsim, hub, heartbeat=0.2)
    made = {d.disk_id: qemu_nbd_target(d.capacity, export=d.disk_id) for d in slow_vcsim.disks}
    targets = ",".join(f"{k}:{t.uri}" for k, t in made.items())
    body = {"job_id": "h-snap", "vm": slow_vcsim.vm, "nbd_targets": targets}
    async with node.client() as client, client.post("/api/v1/backup/start", json=body) as resp:
        assert resp.status == 202, await resp.text()
    job = node.jobs.get("h-snap")
    await wait_for(lambda: job.phase == "creating_snapshot", "the snapshot's creation")
    seen = len(hub.running("h-snap"))
    # The simulator takes 1.5 s to create it: the heartbeat keeps reporting meanwhile.
    await wait_for(
        lambda: len(hub.running("h-snap")) >= seen + 2 or job.phase != "creating_snapshot",
        "heartbeats",
    )
    assert job.phase == "creating_snapshot", "no heartbeat while vCenter created the snapshot"
    final = await hub.final("h-snap")
    assert final["status"] == "completed", final["error"]


async def test_a_job_the_hub_has_ended_stops_and_removes_its_snapshot(
    slow_vcsim, hub, make_node, qemu_nbd_target
):
    # A hub restarted mid-copy fails the job; the node hears it at its next report.
    await hub.up()
    node = await make_node(slow_vcsim, hub, heartbeat=0.2)
    made = {d.disk_id: qemu_nbd_target(d.capacity, export=d.disk_id) for d in slow_vcsim.disks}
    targets = ",".join(f"{k}:{t.uri}" for k, t in made.items())
    body = {"job_id": "h-ended", "vm": slow_vcsim.vm, "nbd_targets": targets}
    async with node.client() as client, client.post("/api/v1/backup/start", json=body) as resp:
        assert resp.status == 202, await resp.text()
    job = node.jobs.get("h-ended")
    await wait_for(lambda: job.phase == "creating_snapshot", "the snapshot's creation")
    hub.ended.add("h-ended")
    final = await hub.final("h-ended")
    assert job.status == "cancelled"
    assert final["status"] == "failed"
    assert final["error"].startswith("the hub ended this backup: backup h-ended is failed")
    assert remaining_snapshots(slow_vcsim) == []
