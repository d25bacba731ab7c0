"""`sendense backup prune` (the real command, in a subprocess) against a stand-in that
answers as the hub's POST /api/v1/prune does; the real hub is in
tests/integration/hub/test_hub_prune.py."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from sendense_tools.api.server import serve_app
from sendense_tools.backup.prunecli import summary
from tests.fixtures.cli import run_sendense, write_token
from tests.fixtures.ports import free_port

TOKEN = "admin-token-for-tests"


def run_record(dry_run: bool, status: str = "completed") -> dict:
    return {
        "id": "p-1", "dry_run": dry_run, "policy": None, "node": None, "status": status,
        "started_at": "2026-12-01T05:00:00+00:00", "finished_at": "2026-12-01T05:00:09+00:00",
        "points_removed": 2, "merged_bytes": 104857600,
        "error": "disk0: qemu-img failed: No space left on device" if status == "failed" else None,
        "vms": [
            {"node": "node1", "vm": "web01", "policy": "nightly", "skipped": None,
             "kept": [{"id": "b3", "created_at": "2026-12-01T02:10:00+00:00",
                       "reasons": ["last", "daily 2026-12-01", "newest"]}],
             "removed": [
                 {"id": "b2", "created_at": "2026-11-30T02:10:00+00:00", "action": "merge",
                  "into": "b3", "bytes": 104857600},
                 {"id": "b1", "created_at": "2026-11-29T02:10:00+00:00", "action": "delete",
                  "into": None, "bytes": 4096},
             ]},
            {"node": "node1", "vm": "db01", "policy": None, "skipped": "no policy",
             "kept": [], "removed": []},
        ],
    }  # fmt: skip


class FakeHub:
    def __init__(self, refuse: tuple[int, str, str] | None = None, status: str = "completed"):
        self.refuse, self.status = refuse, status
        self.bodies: list[dict] = []
        self.app = web.Application()
        self.app.router.add_post("/api/v1/prune", self.prune)

    async def prune(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "unauthorized", "message": "bad"}, status=401)
        body = await request.json()
        self.bodies.append(body)
        if self.refuse:
            status, code, message = self.refuse
            return web.json_response({"error": code, "message": message}, status=status)
        return web.json_response(run_record(body["dry_run"], self.status))


@pytest.fixture
async def hub(request, tmp_path):
    fake = getattr(request, "param", None) or FakeHub()
    port = free_port()
    runner = await serve_app(fake.app, "127.0.0.1", port)
    token_file = write_token(tmp_path, TOKEN)

    async def run(*args: str) -> tuple[int, str, str]:
        return await run_sendense(
            "backup", "prune", *args, "--hub", f"http://127.0.0.1:{port}",
            "--token-file", token_file,
        )  # fmt: skip

    yield fake, run
    await runner.cleanup()


def test_summary_counts_removed_merged_and_kept():
    assert (
        summary(run_record(False))
        == "prune: 2 points removed (1 merged, 104,857,600 bytes), 1 kept"
    )
    assert summary(run_record(True)) == (
        "prune (dry run): 2 points would be removed (1 merged, 104,857,600 bytes), 1 kept"
    )


async def test_dry_run_sends_the_contract_body_and_prints_a_table_per_vm(hub):
    fake, run = hub
    rc, out, err = await run("--dry-run", "--policy", "nightly", "--node", "node1")
    assert rc == 0, err
    assert fake.bodies == [{"dry_run": True, "policy": "nightly", "node": "node1"}]
    assert "web01 on node1 (policy nightly)" in out
    assert "kept: last, daily 2026-12-01, newest" in out
    assert "removed: merged into b3" in out and "removed: deleted" in out
    assert "db01 on node1: skipped: no policy" in out
    assert out.strip().splitlines()[-1] == (
        "prune (dry run): 2 points would be removed (1 merged, 104,857,600 bytes), 1 kept"
    )


async def test_json_prints_the_run_as_the_hub_answered(hub):
    fake, run = hub
    rc, out, err = await run("--json")
    assert rc == 0, err
    assert fake.bodies == [{"dry_run": False, "policy": None, "node": None}]
    assert json.loads(out) == run_record(False)


@pytest.mark.parametrize(
    "hub",
    [
        FakeHub(refuse=(409, "prune_running", "a prune is already running (run p-0)")),
        FakeHub(refuse=(422, "unknown_policy", "policy 'x' is not configured for any node")),
    ],
    indirect=True,
)
async def test_a_refused_prune_exits_2_with_the_hubs_one_line(hub):
    _, run = hub
    rc, _out, err = await run()
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "refused:" in err, err


@pytest.mark.parametrize("hub", [FakeHub(status="failed")], indirect=True)
async def test_a_failed_prune_exits_1_and_says_why(hub):
    _, run = hub
    rc, _out, err = await run()
    assert rc == 1
    assert "prune p-1 failed: disk0: qemu-img failed: No space left on device" in err


async def test_a_policy_name_that_cannot_exist_is_bad_usage_before_any_call(hub):
    fake, run = hub
    rc, _, err = await run("--policy", "Nightly!")
    assert rc == 2 and "is not a policy name" in err
    assert fake.bodies == []
