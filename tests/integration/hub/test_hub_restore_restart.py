"""`sendense hub serve` as a real process killed mid-restore: at its next start the restore
is failed ("hub restarted"), its qemu-nbd are gone, its slots free, its node told."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .chains import Vm
from .conftest import NodeServer, socket_uri
from .restoring import wait_restore
from .scripted_node import ScriptedNode
from .test_hub_restart import HubProcess, alive, wait_gone
from .test_hub_restart import hub_process as hub_process  # the fixture, shared

pytestmark = pytest.mark.asyncio


class ProcessHarness:
    """What Vm and the restore helpers need of a hub, for a hub running as a process."""

    def __init__(self, hub: HubProcess, node: NodeServer, socket_dir: Path) -> None:
        self.hub, self.node, self.socket_dir = hub, node, socket_dir
        self.url = hub.url
        self.tokens = {"admin": hub.token, "node1": node.token}

    def hub_side(self, uri: str, node: str = "node1") -> str:
        return socket_uri(self.socket_dir, node, uri)

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token or self.hub.token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, json=body, headers=headers) as resp,
        ):
            return resp.status, await resp.json(content_type=None)

    async def wait_status(self, backup_id: str) -> dict[str, Any]:
        async with asyncio.timeout(120):
            while True:
                _, record = await self.call("GET", f"/api/v1/backups/{backup_id}")
                if record["status"] not in ("pending", "running"):
                    return record
                await asyncio.sleep(0.05)

    def script(self, **script: Any) -> ScriptedNode:
        self.node.restorer = ScriptedNode(self.url, self.tokens["node1"], self.hub_side, **script)
        return self.node.restorer


async def test_hub_killed_mid_restore_fails_it_and_holds_nothing(hub_process, tmp_path):
    hub, _, node = hub_process
    await hub.start()
    h = ProcessHarness(hub, node, tmp_path / "nbd")  # hub_config's socket_dir
    full = await Vm(h).backup()
    assert full["status"] == "completed", full["error"]
    script = h.script(hold=asyncio.Event())
    code, started = await h.call(
        "POST", f"/api/v1/backups/{full['id']}/restore", {"name": "web01-restored"}
    )
    assert code == 201, started
    _, ports = await h.call("GET", "/api/v1/nbd/ports")
    pids = [p["pid"] for p in ports]
    assert len(pids) == 2 and all(alive(p) for p in pids)

    assert await hub.stop(signal.SIGKILL) == -signal.SIGKILL
    await hub.start()
    code, record = await h.call("GET", f"/api/v1/restores/{started['id']}")
    assert code == 200
    assert (record["status"], record["error"]) == ("failed", "hub restarted")
    assert record["finished_at"]
    _, metrics = await h.call("GET", "/api/v1/nbd/metrics")
    assert (metrics["allocated"], metrics["qemu_nbd_processes"]) == (0, 0)
    assert await h.call("GET", "/api/v1/nbd/ports") == (200, [])
    assert await wait_gone(pids) == []
    assert list((tmp_path / "nbd" / "node1").iterdir()) == []
    for _ in range(600):
        if started["id"] in script.cancels:
            break
        await asyncio.sleep(0.05)
    assert script.cancels == [started["id"]]
    await script.close()

    # The point is untouched: it restores again.
    h.script()
    code, again = await h.call(
        "POST", f"/api/v1/backups/{full['id']}/restore", {"name": "web01-restored"}
    )
    assert code == 201, again
    record = await wait_restore(h, again["id"])  # type: ignore[arg-type]
    assert record["status"] == "completed", record["error"]
    assert await hub.stop() == 0
