"""A hub stopped while it finalizes a job finishes that job at its next start."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
from pathlib import Path

import aiohttp
import nbd
import pytest

from sendense_tools.hub.service import Hub
from sendense_tools.hub.verify import ImageChecker
from tests.fixtures.ports import free_port_range

from .conftest import (
    Gate,
    MiB,
    NodeServer,
    assert_left_nothing,
    hub_config,
    qemu_nbd_under,
    socket_uri,
    targets,
    wait_for,
)
from .test_hub_restart import HubProcess, toml

pytestmark = pytest.mark.asyncio


def db_row(db: Path, backup_id: str, *columns: str) -> tuple:
    """Read straight from the hub's database (the hub is stopped or another process)."""
    with sqlite3.connect(db) as con:
        return con.execute(
            f"SELECT {', '.join(columns)} FROM jobs WHERE id = ?", (backup_id,)
        ).fetchone()


async def test_hub_stopped_while_verifying_completes_the_job_at_next_start(
    make_hub, monkeypatch, tmp_path
):
    h = await make_hub(ports=2)
    h.node.vms["web01"] = [256 * MiB, 64 * MiB]
    gate = Gate()
    monkeypatch.setattr(ImageChecker, "check", gate.wrap(ImageChecker.check))
    code, record = await h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"})
    assert code == 201, record
    await h.finish(record["id"])
    await wait_for(gate.reached, "verification")

    old = h.hub
    await old.stop()
    old.jobs = None  # stopped for good: the fixture must not stop its jobs again
    db = Path(old.config.state.db)
    assert db_row(db, record["id"], "status", "error") == ("running", None)
    assert db_row(db, record["id"], "phase") == ("finalizing",)

    h.hub = Hub(old.config)
    await h.hub.start()
    try:
        final = await h.wait_status(record["id"])
        assert final["status"] == "completed", final["error"]
        assert all(d["sha256"] == d["sha256_qcow2"] for d in final["disk_results"])
        assert db_row(db, record["id"], "phase") == (None,)
        await assert_left_nothing(h, tmp_path, final)
        code, verified = await h.call("POST", f"/api/v1/backups/{record['id']}/verify")
        assert code == 200 and verified["ok"] is True
    finally:
        await h.hub.stop()
        h.hub.jobs = None


def write_random(uri: str, size: int) -> str:
    """Fill a whole export with random data; its SHA-256."""
    handle = nbd.NBD()
    handle.connect_uri(uri)
    digest = hashlib.sha256()
    for offset in range(0, size, 4 * MiB):
        chunk = os.urandom(4 * MiB)
        handle.pwrite(chunk, offset)
        digest.update(chunk)
    handle.flush()
    handle.shutdown()
    return digest.hexdigest()


async def test_hub_killed_while_verifying_completes_the_job_at_next_start(tmp_path):
    size = 256 * MiB
    async with NodeServer(token="") as node:
        raw, tokens = hub_config(tmp_path, free_port_range(2), node.url)
        node.token = tokens["node1"]
        node.vms["big01"] = [size]
        config = tmp_path / "hub.toml"
        config.write_text(toml(raw))
        db = Path(raw["state"]["db"])
        hub = HubProcess(config, f"http://{raw['api']['listen']}", tokens["admin"])
        await hub.start()
        try:
            code, record = await hub.call(
                "POST", "/api/v1/backups", {"vm": "big01", "node": "node1"}
            )
            assert code == 201, record
            backup_id = record["id"]
            ((disk_id, uri),) = targets(node.start_for(backup_id)["nbd_targets"]).items()
            where = socket_uri(tmp_path / "nbd", "node1", uri)
            sha = await asyncio.to_thread(write_random, where, size)
            disk = {"disk_id": disk_id, "bytes_copied": size, "bytes_total": size, "sha256": sha}
            report = {"status": "completed", "snapshot": "snapshot-1", "disks": [disk]}
            headers = {"Authorization": f"Bearer {tokens['node1']}"}
            async with (
                aiohttp.ClientSession() as session,
                session.put(f"{hub.url}/api/v1/backups/{backup_id}/progress", json=report,
                            headers=headers) as resp,
            ):  # fmt: skip
                assert resp.status == 202, await resp.text()
            # The hub's reader of the stored image: it is verifying now.
            async with asyncio.timeout(60):
                while True:
                    everything = set(qemu_nbd_under(tmp_path))
                    if everything - set(qemu_nbd_under(tmp_path, writers=True)):
                        break
                    status = db_row(db, backup_id, "status")
                    assert status == ("running",), "verification ended before the hub was killed"
                    await asyncio.sleep(0.01)
            assert await hub.stop(signal.SIGKILL) == -signal.SIGKILL
            assert db_row(db, backup_id, "status") == ("running",)

            await hub.start()
            async with asyncio.timeout(120):
                while True:
                    _, record = await hub.call("GET", f"/api/v1/backups/{backup_id}")
                    if record["status"] != "running":
                        break
                    await asyncio.sleep(0.05)
            assert record["status"] == "completed", record["error"]
            assert record["disk_results"][0]["sha256_qcow2"] == sha
            assert await hub.stop() == 0
            # The killed hub's own reader of the image went with the restart.
            assert qemu_nbd_under(tmp_path) == []
        finally:
            if hub.proc is not None and hub.proc.returncode is None:
                await hub.stop(signal.SIGKILL)
