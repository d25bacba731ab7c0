"""Starting a backup on a node whose spool cannot record it: refused, nothing done in vCenter."""

from __future__ import annotations

import shutil

from tests.fixtures.vcsim import remaining_snapshots


async def test_a_start_that_cannot_be_recorded_is_503_and_touches_nothing(
    vcsim, hub, make_node, qemu_nbd_target
):
    node = await make_node(vcsim, hub)
    # A spool that cannot take a record (a full or broken disk fails the same way).
    shutil.rmtree(node.spool / "jobs")
    (node.spool / "jobs").write_text("")
    made = {d.disk_id: qemu_nbd_target(d.capacity, export=d.disk_id) for d in vcsim.disks}
    body = {
        "job_id": "s-full",
        "vm": vcsim.vm,
        "nbd_targets": ",".join(f"{k}:{t.uri}" for k, t in made.items()),
    }
    async with node.client() as client:
        async with client.post("/api/v1/backup/start", json=body) as resp:
            assert resp.status == 503
            err = await resp.json()
        assert err["error"] == "spool_unavailable"
        assert err["message"].startswith(f"cannot write {node.spool}/jobs/s-full.json: ")
        async with client.get("/api/v1/backup/s-full") as resp:
            assert resp.status == 404
    assert remaining_snapshots(vcsim) == []
    assert node.jobs.running() == 0
