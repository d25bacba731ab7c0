"""A hub in-process on free ports, and a stand-in node API (the real node is another component).

The stand-in answers the node endpoints the hub calls and then plays the
node's data path for real: it writes into the hub's qemu-nbd exports with
libnbd (through the node's unix sockets, or TCP with TLS-PSK in the old layout)
and PUTs the final report with SHA-256 per disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nbd
import pytest
from aiohttp import web

from sendense_tools.config import parse_config
from sendense_tools.hub.config import HubConfig
from sendense_tools.hub.service import Hub
from tests.fixtures.ports import free_port, free_port_range

MiB = 1024 * 1024


def write_secret(path: Path, value: str) -> str:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


@dataclass
class NodeServer:
    """Answers GET /api/v1/vms/{vm}, POST /api/v1/backup/start and .../cancel."""

    token: str
    # Tokens of further nodes this stand-in also plays (a hub with two live nodes).
    other_tokens: list[str] = field(default_factory=list)
    vms: dict[str, list[int]] = field(default_factory=dict)
    starts: list[dict[str, Any]] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    start_status: int = 202
    # Seconds GET /api/v1/vms/{vm} takes (a slow vCenter).
    vm_delay: float = 0.0
    # Set: POST /api/v1/backup/start waits for it (the hub is "telling the node").
    hold_start: asyncio.Event | None = None
    start_entered: asyncio.Event = field(default_factory=asyncio.Event)
    # GET /api/v1/backup/{id}: the node's own view of each job (absent: 404).
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    asks: list[str] = field(default_factory=list)
    # The node's restore half (scripted_node.py's ScriptedNode), when a test plays it.
    restorer: Any = None
    url: str = ""
    _runner: web.AppRunner | None = None

    def _check(self, request: web.Request) -> None:
        given = request.headers.get("Authorization")
        if given not in [f"Bearer {t}" for t in (self.token, *self.other_tokens)]:
            raise web.HTTPUnauthorized()

    async def vm(self, request: web.Request) -> web.Response:
        self._check(request)
        await asyncio.sleep(self.vm_delay)
        name = request.match_info["vm"]
        if name not in self.vms:
            return web.json_response(
                {"error": "vm_not_found", "message": f"VM {name} not found"}, status=404
            )
        disks = [
            {"disk_id": f"disk{i}", "key": 2000 + i, "label": f"Hard disk {i + 1}",
             "file": f"[LocalDS_0] {name}/{name}_{i}.vmdk", "capacity": cap}
            for i, cap in enumerate(self.vms[name])
        ]  # fmt: skip
        return web.json_response({"name": name, "moref": f"vm-{name}", "disks": disks})

    async def start(self, request: web.Request) -> web.Response:
        self._check(request)
        body = await request.json()
        self.start_entered.set()
        if self.hold_start is not None:
            await self.hold_start.wait()
        if self.start_status != 202:
            return web.json_response(
                {"error": "refused", "message": "test node refuses"}, status=self.start_status
            )
        self.starts.append(body)
        return web.json_response({"job_id": body["job_id"], "status": "running"}, status=202)

    async def job(self, request: web.Request) -> web.Response:
        self._check(request)
        job_id = request.match_info["job_id"]
        self.asks.append(job_id)
        if job_id not in self.jobs:
            return web.json_response(
                {"error": "job_not_found", "message": f"no backup {job_id}"}, status=404
            )
        return web.json_response({"job_id": job_id, **self.jobs[job_id]})

    async def cancel(self, request: web.Request) -> web.Response:
        self._check(request)
        self.cancels.append(request.match_info["job_id"])
        return web.json_response({"status": "cancelled"})

    async def restore(self, request: web.Request) -> web.StreamResponse:
        self._check(request)
        if self.restorer is None:
            return web.json_response({"error": "not_found", "message": "no restores"}, status=404)
        return await self.restorer.handle(request)

    async def __aenter__(self) -> NodeServer:
        app = web.Application()
        app.router.add_get("/api/v1/vms/{vm}", self.vm)
        app.router.add_post("/api/v1/backup/start", self.start)
        app.router.add_get("/api/v1/backup/{job_id}", self.job)
        app.router.add_post("/api/v1/backup/{job_id}/cancel", self.cancel)
        app.router.add_route("*", "/api/v1/restore/{tail:.*}", self.restore)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def start_for(self, job_id: str) -> dict[str, Any]:
        return next(s for s in self.starts if s["job_id"] == job_id)


def targets(nbd_targets: str) -> dict[str, str]:
    return dict(item.split(":", 1) for item in nbd_targets.split(","))


def slot_of(uri: str) -> tuple[int, str]:
    """(slot, export) of a target `nbd://127.0.0.1:<slot>/<export>`."""
    hostport, export = uri.removeprefix("nbd://").split("/", 1)
    return int(hostport.rsplit(":", 1)[1]), export


def socket_uri(socket_dir: str | Path, node: str, uri: str) -> str:
    """What the node's forward of a target leads to on the hub: that node's slot socket."""
    slot, export = slot_of(uri)
    return f"nbd+unix:///{export}?socket={Path(socket_dir) / node / f'{slot}.sock'}"


def open_export(uri: str, tls: dict | None) -> nbd.NBD:
    """A libnbd handle on a hub export, with the job's PSK when given."""
    handle = nbd.NBD()
    if tls is not None:
        fd, psk = tempfile.mkstemp()
        os.write(fd, f"{tls['username']}:{tls['psk']}\n".encode())
        os.close(fd)
        try:
            handle.set_tls(nbd.TLS_REQUIRE)
            handle.set_tls_username(tls["username"])
            handle.set_tls_psk_file(psk)
            handle.connect_uri(uri)
        finally:
            os.unlink(psk)
    else:
        handle.connect_uri(uri)
    return handle


def write_disk(uri: str, tls: dict | None, seed: int) -> str:
    """Write a few MiB of seeded data at two offsets; return the SHA-256 of the whole disk."""
    handle = open_export(uri, tls)
    size = handle.get_size()
    chunks = {0: bytes([seed % 251 + 1]) * MiB, size // 2: os.urandom(2 * MiB)}
    for offset, data in chunks.items():
        handle.pwrite(data, offset)
    handle.flush()
    handle.shutdown()
    digest = hashlib.sha256()
    pos = 0
    for offset, data in sorted(chunks.items()):
        digest.update(bytes(offset - pos))
        digest.update(data)
        pos = offset + len(data)
    digest.update(bytes(size - pos))
    return digest.hexdigest()


@dataclass
class HubHarness:
    hub: Hub
    node: NodeServer
    tokens: dict[str, str]
    port_range: tuple[int, int]
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.hub.url

    def hub_side(self, uri: str, node: str = "node1") -> str:
        """A target as the tunnel delivers it: the slot's socket (unix) or the port (tcp)."""
        nbd = self.hub.config.nbd
        return socket_uri(nbd.socket_dir, node, uri) if nbd.listen == "unix" else uri

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token or self.tokens['admin']}"}
        async with self.session.request(
            method, self.url + path, json=body, headers=headers
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def record(self, backup_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/api/v1/backups/{backup_id}")
        assert status == 200, body
        return body

    async def wait_status(self, backup_id: str) -> dict[str, Any]:
        """The record once it is final (generous bound: the machine is shared)."""
        async with asyncio.timeout(120):
            while True:
                record = await self.record(backup_id)
                if record["status"] not in ("pending", "running"):
                    return record
                await asyncio.sleep(0.05)

    async def copy(self, backup_id: str, node: str = "node1") -> list[dict[str, Any]]:
        """Play the node's copy: write every disk; each disk's final numbers."""
        start = self.node.start_for(backup_id)
        disks = []
        for i, (disk_id, uri) in enumerate(targets(start["nbd_targets"]).items()):
            where = self.hub_side(uri, node)
            sha = await asyncio.to_thread(write_disk, where, start["nbd_tls"], i)
            disks.append({"disk_id": disk_id, "bytes_copied": 3 * MiB, "bytes_total": 3 * MiB,
                          "sha256": sha})  # fmt: skip
        return disks

    async def finish(
        self,
        backup_id: str,
        corrupt: str | None = None,
        status: str = "completed",
        node: str = "node1",
    ) -> None:
        """Play the node: write every disk, then PUT the final report."""
        disks = await self.copy(backup_id, node)
        for d in disks:
            if d["disk_id"] == corrupt:
                d["sha256"] = hashlib.sha256(b"not this disk").hexdigest()
        report = {"status": status, "snapshot": "snapshot-1", "error": None, "disks": disks}
        if status == "failed":
            report["error"] = "source read failed"
        code, body = await self.call(
            "PUT", f"/api/v1/backups/{backup_id}/progress", report, token=self.tokens[node]
        )
        assert code == 202, body


def qemu_nbd_under(where: Path, writers: bool = False) -> list[int]:
    """Live qemu-nbd processes whose command line names a path under `where`
    (`writers`: only those serving an image read-write)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        names = [os.path.basename(a.decode(errors="replace")) for a in argv]
        if writers and b"--read-only" in argv:
            continue
        if "qemu-nbd" in names and f"{where}/".encode() in b" ".join(argv) and state != "Z":
            found.append(int(entry.name))
    return found


async def assert_no_exports_of(h, tmp_path: Path, job_id: str) -> None:
    """No slot, no export, no socket and no key directory of the job stay on the hub."""
    code, metrics = await h.call("GET", "/api/v1/nbd/metrics")
    assert code == 200
    assert (metrics["allocated"], metrics["available"]) == (0, metrics["total"]), metrics
    assert metrics["qemu_nbd_processes"] == 0, metrics
    assert await h.call("GET", "/api/v1/nbd/ports") == (200, [])
    assert qemu_nbd_under(tmp_path) == []
    sockets = tmp_path / "nbd" / "node1"
    assert not sockets.exists() or list(sockets.iterdir()) == []
    assert not (h.hub.jobs.key_root / job_id).exists()


async def assert_left_nothing(h, tmp_path: Path, record: dict) -> None:
    await assert_no_exports_of(h, tmp_path, record["id"])
    folder = Path(record["disk_results"][0]["qcow2_path"]).parent
    # Only a completed job keeps its images.
    assert folder.exists() == (record["status"] == "completed"), record


class Gate:
    """Holds the `at`-th call of a step until released; the real step then runs."""

    def __init__(self, at: int = 0) -> None:
        self.at = at
        self.calls = 0
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        async def held(*args: Any, **kwargs: Any) -> Any:
            call, self.calls = self.calls, self.calls + 1
            if call == self.at:
                self.reached.set()
                await self.opened.wait()
            return await real(*args, **kwargs)

        return held


async def wait_for(event: asyncio.Event, what: str) -> None:
    try:
        async with asyncio.timeout(60):
            await event.wait()
    except TimeoutError:
        raise AssertionError(f"the job never reached {what}") from None


def hub_config(
    tmp_path: Path,
    port_range: tuple[int, int],
    node_url: str,
    nodes: tuple[str, str] = ("node1", "node2"),
    **nbd: Any,
) -> tuple[dict, dict[str, str]]:
    """hub.toml content and the tokens {"admin", <node>, <other node>} it names; the
    first node's API is `node_url`, the second's unreachable."""
    first, second = nodes
    tokens = {who: f"{who}-{os.urandom(8).hex()}" for who in ("admin", first, second)}
    admin = write_secret(tmp_path / "admin-token", tokens["admin"])
    node_token = write_secret(tmp_path / f"{first}-token", tokens[first])
    other_token = write_secret(tmp_path / f"{second}-token", tokens[second])
    return {
        "api": {"listen": f"127.0.0.1:{free_port()}", "token_file": admin},
        "nbd": {
            "port_range": f"{port_range[0]}-{port_range[1]}",
            "socket_dir": str(tmp_path / "nbd"),
            **nbd,
        },
        "repository": {"path": str(tmp_path / "repository")},
        "state": {"db": str(tmp_path / "state" / "hub.db")},
        "nodes": {
            first: {"api_url": node_url, "token_file": node_token},
            second: {"api_url": "http://127.0.0.1:9", "token_file": other_token},
        },
    }, tokens


@pytest.fixture
async def make_hub(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Factory: `await make_hub(ports=8, repository=None, state=None, **nbd_keys)`.

    Returns a HubHarness: the hub and the node stand-in. `port_range` and `nodes`
    set the slots and node ids (a hub behind tests/fixtures/sshd.py's policy).
    """
    stack: list[Any] = []

    async def make(
        ports: int = 8,
        repository: Path | None = None,
        state: Path | None = None,
        node2_live: bool = False,
        port_range: tuple[int, int] | None = None,
        nodes: tuple[str, str] = ("node1", "node2"),
        stall_timeout: float | None = None,
        **nbd_keys: Any,
    ) -> HubHarness:
        rng = port_range or free_port_range(ports)
        node = NodeServer(token="")
        await node.__aenter__()
        stack.append(node)
        raw, tokens = hub_config(tmp_path, rng, node.url, nodes, **nbd_keys)
        if repository is not None:
            raw["repository"]["path"] = str(repository)
        if state is not None:
            raw["state"]["db"] = str(state)
        if stall_timeout is not None:
            raw["jobs"] = {"stall_timeout": stall_timeout}
        node.token = tokens[nodes[0]]
        if node2_live:
            raw["nodes"][nodes[1]]["api_url"] = node.url
            node.other_tokens.append(tokens[nodes[1]])
        hub = Hub(parse_config(raw, HubConfig))
        await hub.start()
        stack.append(hub)
        session = aiohttp.ClientSession()
        stack.append(session)
        return HubHarness(hub, node, tokens, rng, session)

    yield make
    for item in reversed(stack):
        if isinstance(item, Hub):
            await item.stop()
        elif isinstance(item, aiohttp.ClientSession):
            await item.close()
        else:
            await item.__aexit__(None, None, None)


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` (mount's size=, root only) at `where`: a filesystem this
    test alone writes to (it fills up, turns read-only, or holds still for statvfs)."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a repository that fills up or turns read-only."""
    with tmpfs(tmp_path / "small-fs", "2m") as where:
        yield where


def fill(directory: Path) -> None:
    """Write until the filesystem under `directory` has no block left."""
    with (directory / "filler").open("wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(64 * 1024))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def remount_read_only(directory: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)
