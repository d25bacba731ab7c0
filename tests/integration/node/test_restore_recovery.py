"""A node killed with SIGKILL mid-restore: the next start destroys the VM it was making,
deletes its files and reports the restore failed. A real `sendense node serve`."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from sendense_tools.restore.tag import tag_of
from sendense_tools.vsphere.inventory import find_vm
from tests.fixtures.node_proc import NodeProcess, nbdkit_sources, node_process
from tests.fixtures.restores import (
    MiB,
    NbdGate,
    Points,
    assert_nothing_left,
    body,
    source_hardware,
    vms_called,
)
from tests.integration.node.conftest import TOKEN
from tests.integration.node.test_outbox import wait_for


@contextlib.asynccontextmanager
async def writing_restore(
    vcsim, hub, chain, tmp_path: Path, name: str
) -> AsyncIterator[tuple[NodeProcess, str, dict]]:
    """A real node whose restore as VM `name` is held in its writing phase: (the node, the
    restore's job id, the source hardware). The node and the gate stop at the exit."""
    await hub.up()
    hardware = source_hardware(vcsim, ["disk0", "disk1"])
    points = Points(chain, hardware)
    sources = points.serve()
    gate = NbdGate(sources["disk0"]).start()
    node = node_process(tmp_path, vcsim, hub.url, TOKEN)
    try:
        gate.hold_after(MiB)  # the restore stays in its writing phase
        sources["disk0"] = gate.uri
        request = body(name, hardware, sources, points.disks())
        job_id = request["job_id"]
        await node.start()
        async with node.client() as c, c.post("/api/v1/restore/start", json=request) as r:
            assert r.status == 201, await r.text()
        await wait_for(
            lambda: any(x["phase"] == "writing" for x in hub.running(job_id)), "the writing phase"
        )
        yield node, job_id, hardware
    finally:
        await node.stop()
        gate.stop()


async def test_a_restore_the_node_crashed_in_is_cleaned_up_and_reported_failed(
    vcsim, hub, chain, tmp_path
):
    name = "restored-crash"
    async with writing_restore(vcsim, hub, chain, tmp_path, name) as (node, job_id, hardware):
        await node.stop(signal.SIGKILL)
        # The crash left a half-made VM, marked as this restore's.
        [moref] = vms_called(vcsim, name)
        session = vcsim.session()
        try:
            assert tag_of(session, find_vm(session, moref)) == job_id
        finally:
            session.close()
        await wait_for(lambda: not nbdkit_sources(vcsim), "nbdkit to exit with the node")
        assert hub.finals(job_id) == []

        await node.start()
        final = await hub.final(job_id)
        assert final["status"] == "failed"
        assert final["error"].startswith("node restarted during the restore; "), final["error"]
        assert f"VM {name} destroyed" in final["error"]
        async with node.client() as c, c.get(f"/api/v1/restore/{job_id}") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "failed"
        assert_nothing_left(vcsim, name, hardware)
        await wait_for(lambda: node.log_count(f"final report for {job_id} delivered"), "delivery")
        assert not (tmp_path / "spool" / "restores" / "reports" / f"{job_id}.json").exists()


async def test_a_node_stopped_mid_restore_cleans_up_before_it_exits(vcsim, hub, chain, tmp_path):
    name = "restored-stop"
    async with writing_restore(vcsim, hub, chain, tmp_path, name) as (node, job_id, hardware):
        assert await node.stop(signal.SIGTERM) == 0
        final = await hub.final(job_id, within=5)  # sent before the node exited
    assert final["status"] == "cancelled", final
    assert_nothing_left(vcsim, name, hardware)
