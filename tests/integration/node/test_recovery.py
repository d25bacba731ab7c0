"""A node killed with SIGKILL mid-copy: the next start removes its snapshot and reports the job.

A real `sendense node serve` process against the simulator, copying into slow
nbdkit targets, and a hub that records what it is sent.
"""

from __future__ import annotations

import signal

from sendense_tools.vsphere.inventory import find_vm
from sendense_tools.vsphere.snapshots import (
    OWNER_MARK,
    create_snapshot,
    list_snapshots,
    remove_snapshot,
)
from tests.fixtures.node_proc import nbdkit_sources, node_process
from tests.fixtures.vcsim import remaining_snapshots
from tests.integration.node.conftest import TOKEN
from tests.integration.node.test_outbox import wait_for


async def test_a_crashed_jobs_snapshot_is_removed_and_the_job_reported_failed(
    vcsim, hub, slow_nbd_target, snapshot_watch, tmp_path
):
    await hub.up()
    node = node_process(tmp_path, vcsim, hub.url, TOKEN)
    await node.start()
    targets = ",".join(f"{d.disk_id}:{slow_nbd_target(d.capacity).uri}" for d in vcsim.disks)
    body = {"job_id": "r-crash", "vm": vcsim.vm, "nbd_targets": targets}
    session = vcsim.session()
    vm = find_vm(session, vcsim.vm)
    try:
        async with node.client() as client, client.post("/api/v1/backup/start", json=body) as r:
            assert r.status == 202, await r.text()
        await wait_for(lambda: "sendense-r-crash" in snapshot_watch.present, "the snapshot")
        await wait_for(lambda: hub.running("r-crash") and nbdkit_sources(vcsim), "the copy")
        await node.stop(signal.SIGKILL)
        # A crash leaves the snapshot (nbdkit exits with its parent).
        assert remaining_snapshots(vcsim) == ["sendense-r-crash"]
        await wait_for(lambda: not nbdkit_sources(vcsim), "nbdkit to exit with the node")
        assert hub.finals("r-crash") == []
        # Another appliance that shares this vCenter, with a job of the same id.
        create_snapshot(session, vm, "sendense-r-crash", owner="another-appliance")

        await node.start()
        final = await hub.final("r-crash")
        assert final["status"] == "failed"
        assert final["error"] == (
            "node restarted during the backup; snapshot sendense-r-crash removed"
        )
        left = list_snapshots(session, vm)
        assert [s.description.rsplit(OWNER_MARK, 1)[1] for s in left] == ["another-appliance"]
        async with node.client() as client, client.get("/api/v1/backup/r-crash") as resp:
            assert resp.status == 200
            job = await resp.json()
        assert (job["status"], job["error"]) == ("failed", final["error"])
        await wait_for(lambda: node.log_count("final report for r-crash delivered"), "delivery")
        assert not (tmp_path / "spool" / "reports" / "r-crash.json").exists()
    finally:
        await node.stop()
        for snap in list_snapshots(session, vm):
            remove_snapshot(session, snap)
        session.close()
    assert remaining_snapshots(vcsim) == []
