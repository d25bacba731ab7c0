"""Hub: 101 qemu-nbd exports brought to ready concurrently, against one alone.

Prints the wall time for 101 concurrent single-disk backups to be running
(every export answering NBD), the same for one export alone (the ratio's
base), and the hub's RSS while the 101 run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from sendense_tools.config import parse_config
from sendense_tools.hub.config import HubConfig
from sendense_tools.hub.exports import ExportAddress, start_export
from sendense_tools.hub.images import create_image
from sendense_tools.hub.options import ExportOptions, effective_options
from sendense_tools.hub.service import Hub
from tests.fixtures.ports import free_port_range

EXPORTS = 101
CAPACITY = 1024**3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _one_alone(tmp: Path, opts: ExportOptions) -> float:
    """One export as the hub starts it by default: its node's unix socket, no TLS."""
    path = tmp / "alone.qcow2"
    start = time.perf_counter()
    await create_image(path, CAPACITY)
    address = ExportAddress(10100, socket=tmp / "alone.sock")
    export = await start_export("disk0", address, "alone", path, opts, lambda e: None)
    await export.wait_ready()
    elapsed = time.perf_counter() - start
    await export.stop()
    path.unlink()
    return elapsed


async def _node(token: str) -> tuple[web.AppRunner, str]:
    """The node endpoints the hub calls, answering at once (the node is not measured)."""

    async def vm(request: web.Request) -> web.Response:
        name = request.match_info["vm"]
        disk = {"disk_id": "disk0", "key": 2000, "label": "Hard disk 1", "file": "x",
                "capacity": CAPACITY}  # fmt: skip
        return web.json_response({"name": name, "moref": name, "disks": [disk]})

    async def start(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"job_id": body["job_id"], "status": "running"}, status=202)

    async def cancel(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/v1/vms/{vm}", vm)
    app.router.add_post("/api/v1/backup/start", start)
    app.router.add_post("/api/v1/backup/{job}/cancel", cancel)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def _run(tmp: Path) -> None:
    token = os.urandom(16).hex()
    token_file = tmp / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    node_token_file = tmp / "node-token"
    node_token_file.write_text(os.urandom(16).hex())
    node_token_file.chmod(0o600)
    node, node_url = await _node(token)
    lo, hi = free_port_range(EXPORTS)
    config = parse_config(
        {
            "api": {"listen": f"127.0.0.1:{_free_port()}", "token_file": str(token_file)},
            "nbd": {"port_range": f"{lo}-{hi}", "socket_dir": str(tmp / "nbd")},
            "repository": {"path": str(tmp / "repo")},
            "state": {"db": str(tmp / "hub.db")},
            "nodes": {"node1": {"api_url": node_url, "token_file": str(node_token_file)}},
        },
        HubConfig,
    )
    opts = effective_options(ExportOptions(), tmp)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    alone = statistics.median([await _one_alone(tmp, opts) for _ in range(5)])
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with Hub(config) as hub, aiohttp.ClientSession(headers=headers) as session:
            rss_idle = _rss_kib()

            async def post(i: int) -> dict:
                body = {"vm": f"vm{i:03d}", "node": "node1"}
                async with session.post(hub.url + "/api/v1/backups", json=body) as resp:
                    assert resp.status == 201, await resp.text()
                    return await resp.json()

            start = time.perf_counter()
            records = await asyncio.gather(*(post(i) for i in range(EXPORTS)))
            concurrent = time.perf_counter() - start
            rss_busy = _rss_kib()
            pids = hub.jobs.live_pids() if hub.jobs else []
            qemu_rss = sum(_rss_kib(p) for p in pids) / max(len(pids), 1)
            start = time.perf_counter()
            await asyncio.gather(
                *(session.post(f"{hub.url}/api/v1/backups/{r['id']}/cancel") for r in records)
            )
            teardown = time.perf_counter() - start
    finally:
        await node.cleanup()
    print(f"qemu-nbd options: cache={opts.cache} aio={opts.aio}, unix sockets; load {load}")
    print(f"one export alone (qcow2 + qemu-nbd on a socket + handshake): {alone * 1000:.0f} ms")
    ratio = concurrent / alone
    print(f"{EXPORTS} exports ready concurrently (101 POSTs, one node): {concurrent:.2f} s "
          f"= {ratio:.1f}x one alone ({ratio / EXPORTS:.2f}x per export)")  # fmt: skip
    print(f"teardown of {EXPORTS} jobs (cancel, SIGTERM, slots freed): {teardown:.2f} s")
    print(f"hub RSS: {rss_idle / 1024:.1f} MiB idle, {rss_busy / 1024:.1f} MiB with "
          f"{len(pids)} exports running; qemu-nbd RSS {qemu_rss / 1024:.1f} MiB each")  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sendense-bench-hub-") as tmp:
        asyncio.run(_run(Path(tmp)))


if __name__ == "__main__":
    main()
