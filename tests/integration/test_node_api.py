"""The node API against the simulator, real NBD targets and a small fake hub."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from sendense_tools.api.server import serve_app
from sendense_tools.backup.executor import BackupOptions
from sendense_tools.nbd.digest import sha256_of_nbd
from sendense_tools.node.api import OPERATIONS, make_app
from sendense_tools.node.forwards import TunnelForwards
from sendense_tools.node.jobs import JobManager
from sendense_tools.node.outbox import ReportOutbox
from sendense_tools.node.reporter import HubReporter
from sendense_tools.node.spool import Spool
from tests.fixtures.bad_requests import bad_requests
from tests.fixtures.ports import free_port, free_port_range, port_is_listening
from tests.fixtures.procs import stop_process
from tests.fixtures.rawhttp import raw_request
from tests.fixtures.restores import restore_manager
from tests.fixtures.schemathesis import operations_tested, run_schemathesis
from tests.fixtures.vcsim import remaining_snapshots

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "node-token-for-tests"


class FakeHub:
    """Records PUT /api/v1/backups/{id}/progress bodies (the real hub is another component)."""

    def __init__(self) -> None:
        self.reports: dict[str, list[dict]] = {}
        self.final = asyncio.Event()
        app = web.Application()
        app.router.add_put("/api/v1/backups/{id}/progress", self.progress)
        self.app = app

    async def progress(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "unauthorized", "message": "bad token"}, status=401)
        body = await request.json()
        self.reports.setdefault(request.match_info["id"], []).append(body)
        if body["status"] != "running":
            self.final.set()
        return web.json_response({"ok": True})

    def last(self, job_id: str) -> dict:
        return self.reports[job_id][-1]


@pytest.fixture
async def hub():
    fake = FakeHub()
    port = free_port()
    runner = await serve_app(fake.app, "127.0.0.1", port)
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


async def serve_node(vcsim, hub, forwards: TunnelForwards, spool_dir: Path):
    """A node API on a free port: (url, jobs, runner)."""
    reporter = HubReporter(hub.url, TOKEN, interval=0.2)
    jobs = JobManager(
        lambda: vcsim.params(),
        BackupOptions(retry_for=2),
        reporter,
        ReportOutbox(Spool(spool_dir).open(), reporter, retry_initial=0.1, retry_max=0.5),
    )
    restores = restore_manager(lambda: vcsim.params(), reporter, spool_dir)
    port = free_port()
    runner = await serve_app(make_app(jobs, TOKEN, forwards, restores), "127.0.0.1", port)
    return f"http://127.0.0.1:{port}", jobs, runner


@pytest.fixture
async def node_url(vcsim, hub, tmp_path):
    # The test exports listen on ephemeral ports: this node's "tunnel" forwards
    # all of them (the forward checks have their own node with a narrow range).
    forwards = TunnelForwards("127.0.0.1", (1, 65535))
    url, jobs, runner = await serve_node(vcsim, hub, forwards, tmp_path / "spool")
    yield url
    await jobs.shutdown()
    await runner.cleanup()


@pytest.fixture
async def node(node_url):
    async with aiohttp.ClientSession(
        base_url=node_url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        yield client


def targets_for(vcsim, make) -> str:
    return ",".join(f"{d.disk_id}:{make(d).uri}" for d in vcsim.disks)


async def wait_until(predicate) -> None:
    """Poll a condition another thread updates (the snapshot watcher), for up to 120 s."""
    async with asyncio.timeout(120):
        while not predicate():  # noqa: ASYNC110 - set by a thread, not by this loop
            await asyncio.sleep(0.05)


async def test_vm_disks_in_key_order(vcsim, node):
    async with node.get(f"/api/v1/vms/{vcsim.vm}") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["name"] == vcsim.vm and body["moref"].startswith("vm-")
    assert [(d["disk_id"], d["capacity"]) for d in body["disks"]] == [
        (d.disk_id, d.capacity) for d in vcsim.disks
    ]
    assert all(set(d) == {"disk_id", "key", "label", "file", "capacity"} for d in body["disks"])


async def test_unknown_vm_is_404(node):
    async with node.get("/api/v1/vms/no-such-vm") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"] == "vm_not_found"


async def test_no_token_is_401_but_healthz_is_public(node):
    async with node.get("/api/v1/vms/x", headers={"Authorization": ""}) as resp:
        assert resp.status == 401
    async with node.get("/healthz", headers={"Authorization": ""}) as resp:
        assert resp.status == 200


async def test_backup_reports_progress_and_result_to_the_hub(
    vcsim, node, hub, qemu_nbd_target, snapshot_watch
):
    made = {d.disk_id: qemu_nbd_target(d.capacity, export=d.disk_id) for d in vcsim.disks}
    body = {
        "job_id": "n-ok",
        "vm": vcsim.vm,
        "nbd_targets": targets_for(vcsim, lambda d: made[d.disk_id]),
    }
    async with node.post("/api/v1/backup/start", json=body) as resp:
        assert resp.status == 202
        assert await resp.json() == {"job_id": "n-ok", "status": "running"}
    await asyncio.wait_for(hub.final.wait(), 120)
    final = hub.last("n-ok")
    assert final["status"] == "completed" and final["error"] is None
    assert final["snapshot"] == "sendense-n-ok"
    assert {d["disk_id"]: d["checksum"] for d in final["disks"]} == {
        d.disk_id: d.checksum for d in vcsim.disks
    }
    assert all(d["bytes_copied"] == d["bytes_total"] for d in final["disks"])
    for d in vcsim.disks:
        assert await asyncio.to_thread(sha256_of_nbd, made[d.disk_id].uri) == d.sha256
    async with node.get("/api/v1/backup/n-ok") as resp:
        assert (await resp.json())["status"] == "completed"
    assert snapshot_watch.seen == ["sendense-n-ok"]
    assert remaining_snapshots(vcsim) == []


@pytest.mark.parametrize(
    ("targets", "named"),
    [
        ("disk0:nbd://127.0.0.1:1/a,bogus", "bogus"),
        ("disk0:ftp://127.0.0.1/a", "ftp://127.0.0.1/a"),
        ("disk0:nbd://127.0.0.1:1/a,disk1:nbd://127.0.0.1:2/b", "disk2"),
        (
            "disk0:nbd://127.0.0.1:1/a,disk1:nbd://127.0.0.1:2/b,disk2:nbd://127.0.0.1:3/c,"
            "disk9:nbd://127.0.0.1:4/d",
            "disk9",
        ),
    ],
)
async def test_bad_nbd_targets_are_400_naming_the_part(vcsim, node, targets, named):
    body = {"job_id": "n-bad", "vm": vcsim.vm, "nbd_targets": targets}
    async with node.post("/api/v1/backup/start", json=body) as resp:
        assert resp.status == 400
        err = await resp.json()
    assert err["error"] == "bad_nbd_targets" and named in err["message"]
    assert remaining_snapshots(vcsim) == []


async def test_start_for_unknown_vm_is_404(node):
    body = {"job_id": "n-x", "vm": "no-such-vm", "nbd_targets": "disk0:nbd://127.0.0.1:1/a"}
    async with node.post("/api/v1/backup/start", json=body) as resp:
        assert resp.status == 404


async def test_second_backup_of_a_vm_is_409_and_cancel_removes_the_snapshot(
    vcsim, node, hub, slow_nbd_target, snapshot_watch
):
    targets = targets_for(vcsim, lambda d: slow_nbd_target(d.capacity))
    first = {"job_id": "n-slow", "vm": vcsim.vm, "nbd_targets": targets}
    async with node.post("/api/v1/backup/start", json=first) as resp:
        assert resp.status == 202
    await wait_until(lambda: "sendense-n-slow" in snapshot_watch.present)
    second = {**first, "job_id": "n-second"}
    async with node.post("/api/v1/backup/start", json=second) as resp:
        assert resp.status == 409
        assert "n-slow" in (await resp.json())["message"]
    async with node.post("/api/v1/backup/n-slow/cancel") as resp:
        assert resp.status == 202
    await asyncio.wait_for(hub.final.wait(), 120)
    final = hub.last("n-slow")
    assert final["status"] == "failed" and final["error"] == "cancelled"
    assert any(r["status"] == "running" for r in hub.reports["n-slow"])
    async with node.get("/api/v1/backup/n-slow") as resp:
        assert (await resp.json())["status"] == "cancelled"
    assert snapshot_watch.seen == ["sendense-n-slow"]
    assert remaining_snapshots(vcsim) == []


def write_secret(path: Path, text: str) -> str:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return str(path)


async def test_sigterm_cancels_backups_removes_snapshots_and_reports(
    vcsim, hub, slow_nbd_target, snapshot_watch, tmp_path
):
    port = free_port()
    token_file = write_secret(tmp_path / "token", TOKEN)
    config = tmp_path / "node.toml"
    config.write_text(
        f"""
[api]
listen = "127.0.0.1:{port}"
token_file = "{token_file}"

[node]
spool_dir = "{tmp_path / "spool"}"

[hub]
api_url = "{hub.url}"
# The slow exports listen on ephemeral ports.
nbd_ports = "1-65535"

[vcenter]
url = "{vcsim.url}"
user = "{vcsim.user}"
password_file = "{vcsim.password_file()}"
insecure = true
"""
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sendense_tools", "node", "serve", "--config", str(config),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as client:
            async with asyncio.timeout(60):
                while True:
                    try:
                        async with client.get("/healthz") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
            targets = targets_for(vcsim, lambda d: slow_nbd_target(d.capacity))
            body = {"job_id": "n-term", "vm": vcsim.vm, "nbd_targets": targets}
            async with client.post("/api/v1/backup/start", json=body) as resp:
                assert resp.status == 202
        await wait_until(lambda: "sendense-n-term" in snapshot_watch.present)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    final = hub.last("n-term")
    assert final["status"] == "failed" and final["error"] == "cancelled"
    assert remaining_snapshots(vcsim) == []


@pytest.fixture
def psk_targets(vcsim, tmp_path):
    """qemu-nbd exports that require TLS-PSK, as the hub starts them per job."""
    keydir = tmp_path / "psk"
    keydir.mkdir(mode=0o700)
    psk = os.urandom(32).hex()
    (keydir / "keys.psk").write_text(f"sendense:{psk}\n")
    (keydir / "keys.psk").chmod(0o600)
    procs, uris = [], {}
    for d in vcsim.disks:
        image = tmp_path / f"{d.disk_id}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(d.capacity)],
                       check=True)  # fmt: skip
        port = free_port()
        proc = subprocess.Popen(
            ["qemu-nbd", "--object", f"tls-creds-psk,id=tls0,endpoint=server,dir={keydir}",
             "--tls-creds", "tls0", "--shared=4", "--persistent", "-b", "127.0.0.1",
             "-p", str(port), "-x", d.disk_id, "-f", "qcow2", str(image)],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(proc)
        uris[d.disk_id] = f"nbd://127.0.0.1:{port}/{d.disk_id}"
        deadline = time.monotonic() + 30
        while not port_is_listening(port):
            assert time.monotonic() < deadline, "qemu-nbd did not listen"
            time.sleep(0.02)
    yield uris, {"username": "sendense", "psk": psk}
    for p in procs:
        p.terminate()
        p.wait(10)


async def test_nbd_tls_from_the_start_request_reaches_every_target(vcsim, node, hub, psk_targets):
    uris, tls = psk_targets
    targets = ",".join(f"{k}:{v}" for k, v in uris.items())
    body = {"job_id": "n-tls", "vm": vcsim.vm, "nbd_targets": targets, "nbd_tls": tls}
    async with node.post("/api/v1/backup/start", json=body) as resp:
        assert resp.status == 202
    await asyncio.wait_for(hub.final.wait(), 120)
    final = hub.last("n-tls")
    assert final["status"] == "completed", final["error"]
    for d in vcsim.disks:
        assert await asyncio.to_thread(sha256_of_nbd, uris[d.disk_id], tls) == d.sha256


async def test_targets_that_require_tls_fail_without_nbd_tls(vcsim, node, hub, psk_targets):
    uris, _ = psk_targets
    targets = ",".join(f"{k}:{v}" for k, v in uris.items())
    body = {"job_id": "n-notls", "vm": vcsim.vm, "nbd_targets": targets}
    async with node.post("/api/v1/backup/start", json=body) as resp:
        assert resp.status == 202
    await asyncio.wait_for(hub.final.wait(), 120)
    final = hub.last("n-notls")
    assert final["status"] == "failed" and final["error"]
    assert remaining_snapshots(vcsim) == []


async def test_bad_nbd_tls_is_400(vcsim, node):
    body = {
        "job_id": "n-badtls",
        "vm": vcsim.vm,
        "nbd_targets": "disk0:nbd://h:1/a",
        "nbd_tls": {"username": "sendense", "psk": "not-hex"},
    }
    async with node.post("/api/v1/backup/start", json=body) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "bad_nbd_tls"


@pytest.mark.parametrize("job_id", ["", "../x", "a b", "x" * 200])
async def test_bad_job_id_is_422(vcsim, node, job_id):
    body = {"job_id": job_id, "vm": vcsim.vm, "nbd_targets": "disk0:nbd://h:1/a"}
    async with node.post("/api/v1/backup/start", json=body) as resp:
        assert resp.status == 422


@pytest.mark.parametrize("case", range(len(bad_requests(""))), ids=lambda i: bad_requests("")[i][0])
async def test_malformed_requests_get_a_json_4xx(node_url, case):
    name, headers, body, status, code = bad_requests(TOKEN)[case]
    answer = await raw_request(node_url, "POST", "/api/v1/backup/start", headers, body)
    assert answer.status == status, (name, answer)
    if status == 401:
        assert answer.headers["www-authenticate"] == "Bearer"
    error = answer.json()
    assert error["error"] == code and error["message"] and "\n" not in error["message"]


# -- the node streams only into its own tunnel ---------------------------------

FORWARD_HOST = "127.0.0.2"


@pytest.fixture
async def tunnel_node(vcsim, hub, tmp_path):
    """A node whose tunnel forwards 3 ports on 127.0.0.2: (client, (first, last))."""
    ports = free_port_range(3)
    forwards = TunnelForwards(FORWARD_HOST, ports)
    url, jobs, runner = await serve_node(vcsim, hub, forwards, tmp_path / "spool")
    async with aiohttp.ClientSession(
        base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        yield client, ports
    await jobs.shutdown()
    await runner.cleanup()


@pytest.fixture
def forward_exports(tunnel_node, vcsim):
    """In-memory NBD exports (nbdkit) listening where the tunnel's forwards would."""
    _, (first, _) = tunnel_node
    procs = []
    for i, d in enumerate(vcsim.disks):
        proc = subprocess.Popen(
            ["nbdkit", "-f", "--exit-with-parent", "-i", FORWARD_HOST, "-p", str(first + i),
             "memory", f"size={d.capacity}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(proc)
        deadline = time.monotonic() + 30
        while not port_is_listening(first + i, FORWARD_HOST):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nbdkit did not listen on {FORWARD_HOST}:{first + i}")
            time.sleep(0.02)
    yield {d.disk_id: f"nbd://{FORWARD_HOST}:{first + i}/" for i, d in enumerate(vcsim.disks)}
    for proc in procs:
        stop_process(proc)


async def test_the_hubs_targets_are_reached_through_the_tunnel(
    vcsim, tunnel_node, hub, forward_exports
):
    client, (first, _) = tunnel_node
    # The hub names its own loopback bind; the node keeps port and export only.
    disks = enumerate(vcsim.disks)
    targets = ",".join(f"{d.disk_id}:nbd://127.0.0.1:{first + i}/" for i, d in disks)
    body = {"job_id": "n-fwd", "vm": vcsim.vm, "nbd_targets": targets}
    async with client.post("/api/v1/backup/start", json=body) as resp:
        assert resp.status == 202, await resp.text()
    await asyncio.wait_for(hub.final.wait(), 120)
    assert hub.last("n-fwd")["status"] == "completed", hub.last("n-fwd")["error"]
    for d in vcsim.disks:
        assert await asyncio.to_thread(sha256_of_nbd, forward_exports[d.disk_id]) == d.sha256


async def test_exports_outside_the_tunnel_get_nothing(vcsim, tunnel_node, hub, qemu_nbd_target):
    client, _ = tunnel_node
    # Real, writable exports on loopback, but on ports the tunnel does not forward.
    made = {d.disk_id: qemu_nbd_target(d.capacity, export=d.disk_id) for d in vcsim.disks}
    targets = targets_for(vcsim, lambda d: made[d.disk_id])
    body = {"job_id": "n-out", "vm": vcsim.vm, "nbd_targets": targets}
    async with client.post("/api/v1/backup/start", json=body) as resp:
        assert resp.status == 422
        err = await resp.json()
    assert err["error"] == "nbd_target_refused"
    assert f"disk0:{made['disk0'].uri}" in err["message"]
    await asyncio.sleep(1)
    assert hub.reports == {}
    assert remaining_snapshots(vcsim) == []


@pytest.mark.parametrize(
    "target",
    [
        "nbd://192.0.2.1:{first}/x",
        "nbd://hub.example:{first}/x",
        "nbd+unix:///x?socket=/tmp/elsewhere.sock",
        "nbd://127.0.0.1:{after}/x",
    ],
)
async def test_any_other_target_is_422_naming_it(vcsim, tunnel_node, hub, target):
    client, (first, last) = tunnel_node
    target = target.format(first=first, after=last + 1)
    body = {"job_id": "n-other", "vm": vcsim.vm, "nbd_targets": f"disk0:{target}"}
    async with client.post("/api/v1/backup/start", json=body) as resp:
        assert resp.status == 422
        err = await resp.json()
    assert err["error"] == "nbd_target_refused" and f"disk0:{target}" in err["message"]
    assert remaining_snapshots(vcsim) == []


# -- the OpenAPI document, and schemathesis against it ---------------------------


async def test_the_document_lists_every_route_and_is_public(node_url, vcsim, hub):
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(node_url + "/api/v1/openapi.json") as resp,
    ):
        assert resp.status == 200
        doc = await resp.json()
    assert doc["security"] == [{"bearer": []}]
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    app = make_app(None, TOKEN, TunnelForwards("127.0.0.1", (1, 2)), None)  # type: ignore[arg-type]
    assert documented == {
        (r.method, r.resource.canonical) for r in app.router.routes() if r.method != "*"
    }
    start = doc["paths"]["/api/v1/backup/start"]["post"]
    assert {"202", "400", "401", "404", "409", "422"} <= set(start["responses"])


async def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    vcsim, node, node_url, slow_nbd_target, tmp_path
):
    # One real, running backup that every {job_id} operation works on.
    targets = targets_for(vcsim, lambda d: slow_nbd_target(d.capacity))
    body = {"job_id": "n-fuzz", "vm": vcsim.vm, "nbd_targets": targets}
    async with node.post("/api/v1/backup/start", json=body) as resp:
        assert resp.status == 202
    started = time.monotonic()
    rc, out = await run_schemathesis(node_url, TOKEN, tmp_path, {"path.job_id": "n-fuzz"})
    elapsed = time.monotonic() - started
    assert rc == 0, out[-6000:]
    assert operations_tested(out) == len(OPERATIONS)
    assert elapsed < 60, f"schemathesis took {elapsed:.0f} s"


async def test_other_methods_are_405_naming_the_documented_ones(node):
    async with node.get("/api/v1/backup/start") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "POST"
        assert (await resp.json())["error"] == "method_not_allowed"
    async with node.delete("/api/v1/vms/x") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "GET"
