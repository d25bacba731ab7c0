"""`sendense backup start|list|show|verify` against a small fake hub API."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from aiohttp import web

from sendense_tools.api.server import serve_app
from tests.fixtures.cli import run_sendense, write_token
from tests.fixtures.ports import free_port

TOKEN = "admin-token-for-tests"


def record(backup_id: str, status: str, copied: int, vm: str = "vm1") -> dict:
    return {
        "id": backup_id,
        "vm": vm,
        "node": "node1",
        "status": status,
        "created_at": "2026-11-25T12:00:00Z",
        "finished_at": None if status == "running" else "2026-11-25T12:01:00Z",
        "error": "disk1: target gone" if status == "failed" else None,
        "snapshot": "sendense-" + backup_id,
        "nbd_targets_string": "disk0:nbd://127.0.0.1:10100/e",
        "disk_results": [
            {
                "disk_id": "disk0",
                "capacity": 1 << 20,
                "nbd_port": 10100,
                "export_name": "e",
                "qcow2_path": "/r/vm1/b/disk0.qcow2",
                "bytes_copied": copied,
                "bytes_total": 1 << 20,
                "sha256": "ab" * 32 if status == "completed" else None,
            }
        ],
    }


class FakeHub:
    def __init__(self, final: str) -> None:
        self.final = final
        self.polls = 0
        self.started: list[dict] = []
        app = web.Application()
        app.router.add_post("/api/v1/backups", self.start)
        app.router.add_get("/api/v1/backups", self.list)
        app.router.add_get("/api/v1/backups/{id}", self.get)
        app.router.add_post("/api/v1/backups/{id}/verify", self.verify)
        self.app = app

    def _auth(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "unauthorized", "message": "invalid bearer token"}),
                content_type="application/json",
            )

    async def start(self, request: web.Request) -> web.Response:
        self._auth(request)
        self.started.append(await request.json())
        return web.json_response(record("b1", "running", 0), status=201)

    async def get(self, request: web.Request) -> web.Response:
        self._auth(request)
        if request.match_info["id"] != "b1":
            return web.json_response(
                {"error": "backup_not_found", "message": "backup b9 does not exist"}, status=404
            )
        self.polls += 1
        if self.polls < 3:
            return web.json_response(record("b1", "running", self.polls << 18))
        return web.json_response(record("b1", self.final, 1 << 20))

    async def list(self, request: web.Request) -> web.Response:
        self._auth(request)
        return web.json_response([record("b1", "completed", 1 << 20), record("b0", "failed", 0)])

    async def verify(self, request: web.Request) -> web.Response:
        self._auth(request)
        ok = self.final == "completed"
        disk = {"disk_id": "disk0", "match": ok, "recorded_sha256": "ab" * 32, "sha256": "ab" * 32}
        return web.json_response({"id": "b1", "ok": ok, "disks": [disk]})


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    return write_token(tmp_path, TOKEN)


async def serve(fake: FakeHub):
    port = free_port()
    runner = await serve_app(fake.app, "127.0.0.1", port)
    return runner, f"http://127.0.0.1:{port}"


async def cli(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    return await run_sendense("backup", *args, env=env)


@pytest.mark.parametrize(("final", "code"), [("completed", 0), ("failed", 1)])
async def test_start_wait_follows_the_backup_to_its_end(token_file, final, code):
    fake = FakeHub(final)
    runner, url = await serve(fake)
    try:
        rc, out, err = await cli(
            "start", "--hub", url, "--vm", "vm1", "--node", "node1",
            "--token-file", token_file, "--wait", "--json",
        )  # fmt: skip
    finally:
        await runner.cleanup()
    assert rc == code, err
    assert fake.started == [{"vm": "vm1", "node": "node1", "mode": "auto"}]
    assert fake.polls >= 3
    assert json.loads(out)["status"] == final
    if final == "failed":
        assert err.strip() == "sendense: error: backup b1 failed: disk1: target gone"


@pytest.mark.parametrize("mode", ["full", "incremental"])
async def test_start_passes_the_mode_on(token_file, mode):
    fake = FakeHub("completed")
    runner, url = await serve(fake)
    try:
        rc, out, err = await cli(
            "start", "--hub", url, "--vm", "vm1", "--mode", mode, "--token-file", token_file,
        )  # fmt: skip
    finally:
        await runner.cleanup()
    assert rc == 0, err
    assert fake.started == [{"vm": "vm1", "mode": mode}]
    assert out.strip() == "backup b1 running"


async def test_start_refuses_an_unknown_mode_as_bad_usage(token_file):
    rc, _, err = await cli(
        "start", "--hub", "http://127.0.0.1:9", "--vm", "vm1", "--mode", "differential",
        "--token-file", token_file,
    )  # fmt: skip
    assert rc == 2
    assert "'differential' is not one of 'auto', 'full', 'incremental'" in err


async def test_list_show_verify_and_environment_defaults(token_file):
    fake = FakeHub("completed")
    runner, url = await serve(fake)
    env = {**os.environ, "SENDENSE_HUB_URL": url, "SENDENSE_TOKEN_FILE": token_file}
    try:
        rc, out, _ = await cli("list", "--json", env=env)
        assert rc == 0 and [r["id"] for r in json.loads(out)] == ["b1", "b0"]
        rc, out, _ = await cli("list", env=env)
        assert rc == 0 and "b0" in out and "failed" in out
        rc, out, _ = await cli("show", "b1", "--json", env=env)
        assert rc == 0 and json.loads(out)["id"] == "b1"
        rc, _, err = await cli("show", "b9", env=env)
        assert rc == 1 and "backup b9 does not exist" in err
        rc, out, _ = await cli("verify", "b1", "--json", env=env)
        assert rc == 0 and json.loads(out)["ok"] is True
    finally:
        await runner.cleanup()


async def test_verify_mismatch_fails(token_file):
    fake = FakeHub("failed")
    runner, url = await serve(fake)
    try:
        rc, _, err = await cli("verify", "b1", "--hub", url, "--token-file", token_file)
    finally:
        await runner.cleanup()
    assert rc == 1 and "does not match" in err


async def test_wrong_token_and_unreachable_hub_are_one_line_errors(tmp_path, token_file):
    fake = FakeHub("completed")
    runner, url = await serve(fake)
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    wrong.chmod(0o600)
    try:
        rc, _, err = await cli("list", "--hub", url, "--token-file", str(wrong))
        assert rc == 1 and "HTTP 401" in err and len(err.strip().splitlines()) == 1
    finally:
        await runner.cleanup()
    rc, _, err = await cli(
        "list", "--hub", f"http://127.0.0.1:{free_port()}", "--token-file", token_file
    )
    assert rc == 1 and "cannot reach" in err and len(err.strip().splitlines()) == 1
