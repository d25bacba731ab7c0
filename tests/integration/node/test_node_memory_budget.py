"""`[backup] memory_budget` reaches the copies of a real `sendense node serve`: a backup of the
simulator's VM stays within it, and the buffers are all given back when it ends."""

from __future__ import annotations

import subprocess
import sys

from sendense_tools.nbd.buffers import MIN_BUDGET
from tests.fixtures.node_proc import ROOT, node_process
from tests.fixtures.recording_hub import RecordingHub
from tests.integration.node.conftest import TOKEN
from tests.integration.node.test_outbox import start_backup


async def copy_buffers(node) -> dict:
    async with node.client() as client, client.get("/healthz") as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["copy_buffers"]


async def test_a_backup_draws_on_the_configured_budget_and_gives_it_back(
    vcsim, qemu_nbd_target, tmp_path
):
    hub = RecordingHub(TOKEN)
    await hub.up()
    node = node_process(tmp_path, vcsim, hub.url, TOKEN, backup={"memory_budget": MIN_BUDGET})
    await node.start()
    try:
        assert await copy_buffers(node) == {"budget": MIN_BUDGET, "in_use": 0, "peak": 0}
        await start_backup(node, "m-budget", vcsim, qemu_nbd_target)
        final = await hub.final("m-budget")
        assert final["status"] == "completed", final["error"]
        assert {d["disk_id"]: d["checksum"] for d in final["disks"]} == vcsim.checksums
        buffers = await copy_buffers(node)
        assert buffers["budget"] == MIN_BUDGET
        assert 0 < buffers["peak"] <= MIN_BUDGET
        assert buffers["in_use"] == 0
    finally:
        await node.stop()
        await hub.down()


def test_a_budget_below_the_minimum_is_refused_at_start_in_one_line(vcsim, tmp_path):
    node = node_process(tmp_path, vcsim, "http://127.0.0.1:1", TOKEN,
                        backup={"memory_budget": MIN_BUDGET - 1})  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "sendense_tools", "node", "serve", "--config", str(node.config)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 1
    error = proc.stderr.strip()
    assert "backup.memory_budget" in error and "below the minimum 134217728" in error
    assert "\n" not in error
