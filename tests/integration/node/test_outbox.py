"""A backup's final report reaches the hub after a long outage and across a node restart.

A real `sendense node serve` process, the simulator, qemu-nbd targets, and a
hub (recording what it is sent) that is down, i.e. nothing listens on its port,
while the copy ends.
"""

from __future__ import annotations

import asyncio
import json
import signal
import stat

from tests.fixtures.node_proc import node_process
from tests.fixtures.recording_hub import RecordingHub
from tests.integration.node.conftest import TOKEN

# Small backoff so that the outage spans many attempts in a few seconds: far
# more than the 8 attempts (about 90 s) after which the node used to give up.
FAST_RETRY = {"report_retry_initial": 0.05, "report_retry_max": 0.2}
NOT_YET = "final report for {} not delivered yet"


async def wait_for(predicate, what: str, within: float = 120) -> None:
    try:
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110 - another process changes it
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {within:.0f} s waiting for {what}") from None


async def start_backup(node, job_id: str, vcsim, qemu_nbd_target) -> None:
    made = [(d.disk_id, qemu_nbd_target(d.capacity, export=d.disk_id)) for d in vcsim.disks]
    body = {
        "job_id": job_id,
        "vm": vcsim.vm,
        "nbd_targets": ",".join(f"{k}:{t.uri}" for k, t in made),
    }
    async with node.client() as client, client.post("/api/v1/backup/start", json=body) as resp:
        assert resp.status == 202, await resp.text()


async def test_a_final_report_outlives_a_hub_outage_of_any_length(vcsim, qemu_nbd_target, tmp_path):
    hub = RecordingHub(TOKEN)
    node = node_process(tmp_path, vcsim, hub.url, TOKEN, hub=FAST_RETRY)
    await node.start()
    try:
        await start_backup(node, "o-outage", vcsim, qemu_nbd_target)
        await wait_for(lambda: node.log_count(NOT_YET.format("o-outage")) >= 20, "20 attempts")
        spooled = tmp_path / "spool" / "reports" / "o-outage.json"
        assert stat.S_IMODE(spooled.stat().st_mode) == 0o600
        assert json.loads(spooled.read_text())["report"]["status"] == "completed"
        await hub.up()
        final = await hub.final("o-outage")
        assert final["status"] == "completed", final["error"]
        assert {d["disk_id"]: d["checksum"] for d in final["disks"]} == {
            d.disk_id: d.checksum for d in vcsim.disks
        }
        await wait_for(lambda: not spooled.exists(), "the delivered report to leave the spool")
        assert list((tmp_path / "spool").rglob("*.tmp")) == []
    finally:
        await node.stop()
        await hub.down()


async def test_a_restarted_node_sends_the_report_it_had_spooled(vcsim, qemu_nbd_target, tmp_path):
    hub = RecordingHub(TOKEN)
    node = node_process(tmp_path, vcsim, hub.url, TOKEN, hub=FAST_RETRY)
    await node.start()
    record = tmp_path / "spool" / "jobs" / "o-restart.json"
    try:
        await start_backup(node, "o-restart", vcsim, qemu_nbd_target)
        await wait_for(
            lambda: record.exists() and json.loads(record.read_text())["status"] == "completed",
            "the job to end",
        )
        assert (tmp_path / "spool" / "reports" / "o-restart.json").exists()
        await node.stop(signal.SIGKILL)
        await hub.up()
        assert hub.reports == {}
        await node.start()
        final = await hub.final("o-restart")
        assert final["status"] == "completed", final["error"]
        # The restarted node still answers for the job of its previous run.
        async with node.client() as client, client.get("/api/v1/backup/o-restart") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "completed"
    finally:
        await node.stop()
        await hub.down()
