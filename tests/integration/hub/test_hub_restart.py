"""`sendense hub serve` as a real process: crash and restart mid-job, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures.ports import port_is_listening

from .conftest import MiB, NodeServer, hub_config

pytestmark = pytest.mark.asyncio


def toml(data: dict) -> str:
    out = []
    for section, values in data.items():
        if section == "nodes":
            for node, entry in values.items():
                out.append(f"[nodes.{node}]")
                out += [f'{k} = "{v}"' for k, v in entry.items() if k != "policies"]
                for name, policy in entry.get("policies", {}).items():
                    out.append(f"[nodes.{node}.policies.{name}]")
                    out += [f"{k} = {json.dumps(v)}" for k, v in policy.items()]
            continue
        out.append(f"[{section}]")
        out += [f"{k} = {v!r}".replace("'", '"') for k, v in values.items()]
    return "\n".join(out) + "\n"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class HubProcess:
    def __init__(self, config: Path, url: str, token: str) -> None:
        self.config, self.url, self.token = config, url, token
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sendense_tools", "hub", "serve", "--config", str(self.config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        async with asyncio.timeout(60), aiohttp.ClientSession() as session:
            while True:
                assert self.proc.returncode is None, "hub exited during start-up"
                try:
                    async with session.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)

    async def call(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, json=body, headers=headers) as resp,
        ):
            return resp.status, await resp.json()

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        async with asyncio.timeout(60):
            return await self.proc.wait()


@pytest.fixture
async def hub_process(tmp_path):
    async with NodeServer(token="") as node:
        from tests.fixtures.ports import free_port_range

        rng = free_port_range(4)
        raw, tokens = hub_config(tmp_path, rng, node.url)
        node.token = tokens["node1"]
        node.vms["web01"] = [16 * MiB, 16 * MiB]
        config = tmp_path / "hub.toml"
        config.write_text(toml(raw))
        host_port = raw["api"]["listen"]
        hub = HubProcess(config, f"http://{host_port}", tokens["admin"])
        try:
            yield hub, rng, node
        finally:
            if hub.proc is not None and hub.proc.returncode is None:
                await hub.stop(signal.SIGKILL)


async def running_backup(hub: HubProcess) -> tuple[str, list[int]]:
    code, record = await hub.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"})
    assert code == 201, record
    _, rows = await hub.call("GET", "/api/v1/nbd/ports")
    return record["id"], [r["pid"] for r in rows]


async def wait_gone(pids: list[int]) -> list[int]:
    """Pids still alive after a generous wait (the kernel delivers the death signal)."""
    for _ in range(600):
        left = [p for p in pids if alive(p)]
        if not left:
            break
        await asyncio.sleep(0.05)
    return left


async def test_hub_killed_mid_job_restarts_with_nothing_held(hub_process, tmp_path):
    hub, (lo, hi), node = hub_process
    await hub.start()
    backup_id, pids = await running_backup(hub)
    assert len(pids) == 2 and all(alive(p) for p in pids)
    sockets = tmp_path / "nbd" / "node1"  # hub_config's socket_dir
    assert sorted(p.name for p in sockets.iterdir()) == [f"{lo}.sock", f"{lo + 1}.sock"]

    assert await hub.stop(signal.SIGKILL) == -signal.SIGKILL
    await hub.start()
    code, record = await hub.call("GET", f"/api/v1/backups/{backup_id}")
    assert code == 200
    assert (record["status"], record["error"]) == ("failed", "hub restarted")
    # Its images go with it: only completed restore points stay.
    assert not (tmp_path / "repository" / "web01").exists()
    _, metrics = await hub.call("GET", "/api/v1/nbd/metrics")
    assert (metrics["allocated"], metrics["qemu_nbd_processes"]) == (0, 0)
    assert await hub.call("GET", "/api/v1/nbd/ports") == (200, [])
    assert await wait_gone(pids) == []
    assert not any(port_is_listening(p) for p in range(lo, hi + 1))
    assert list(sockets.iterdir()) == []
    # The node, still copying into exports that are gone, is told to stop.
    for _ in range(600):
        if backup_id in node.cancels:
            break
        await asyncio.sleep(0.05)
    assert backup_id in node.cancels
    # The VM is free to be backed up again.
    await running_backup(hub)
    assert await hub.stop() == 0


async def test_sigterm_stops_every_qemu_nbd_and_fails_the_job(hub_process):
    hub, (lo, hi), _ = hub_process
    await hub.start()
    backup_id, pids = await running_backup(hub)
    assert await hub.stop(signal.SIGTERM) == 0
    assert [p for p in pids if alive(p)] == []
    assert not any(port_is_listening(p) for p in range(lo, hi + 1))
    await hub.start()
    _, record = await hub.call("GET", f"/api/v1/backups/{backup_id}")
    assert (record["status"], record["error"]) == ("failed", "hub stopped")
    assert await hub.stop() == 0


async def test_bad_config_is_one_line_and_exit_1(tmp_path):
    config = tmp_path / "hub.toml"
    config.write_text('[nbd]\nport_range = "10200-10100"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sendense_tools", "hub", "serve", "--config", str(config),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 1
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "nbd.port_range" in lines[0], lines
