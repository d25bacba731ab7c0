"""What the restore tests share: a hub with a VM's points, the scripted node, and the
checks that a restore left nothing behind."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from .chains import Vm
from .conftest import HubHarness, assert_no_exports_of
from .scripted_node import ScriptedNode


def scripted_node(h: HubHarness, **script: Any) -> ScriptedNode:
    """The node's restore half, played by a script on the stand-in node's API."""
    script_node = ScriptedNode(h.url, h.tokens["node1"], h.hub_side, **script)
    h.node.restorer = script_node
    return script_node


async def point(h: HubHarness, vm: Vm, node_mode: str = "full") -> dict[str, Any]:
    record = await vm.backup(node_mode=node_mode)
    assert record["status"] == "completed", record["error"]
    return record


async def restore(
    h: HubHarness, backup_id: str, token: str | None = None, **body: Any
) -> tuple[int, dict[str, Any]]:
    return await h.call(
        "POST", f"/api/v1/backups/{backup_id}/restore", {"name": "web01-restored", **body}, token
    )


async def wait_restore(h: HubHarness, restore_id: str) -> dict[str, Any]:
    """The restore record once it ended (generous bound: the machine is shared)."""
    try:
        async with asyncio.timeout(120):
            while True:
                code, record = await h.call("GET", f"/api/v1/restores/{restore_id}")
                assert code == 200, record
                if record["status"] not in ("pending", "running"):
                    return record
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"restore {restore_id} never ended: {record}") from None


async def assert_restore_left_nothing(h: HubHarness, tmp_path: Path, restore_id: str) -> None:
    """No slot, no export, no socket and no key directory of the restore stay on the hub."""
    await assert_no_exports_of(h, tmp_path, restore_id)
    assert h.hub.jobs.store.points_in_use() == set()
