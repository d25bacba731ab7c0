"""`sendense restore start|list|show|cancel` (the real command, in a subprocess) against a
small hub stand-in that speaks the hub's restore API; the whole stack is in
tests/integration/test_restore.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web
from rich.console import Console

from sendense_tools.api.server import serve_app
from sendense_tools.restore.cli import disk_table, list_table, summary_lines
from tests.fixtures.cli import run_sendense, write_token
from tests.fixtures.ports import free_port

TOKEN = "node-token-for-tests"
CAPACITY = 8 << 20
POINT_SUM = {"algorithm": "blake2b", "block_size": 4194304, "checksum": "1f" * 32}
OTHER_SUM = {"algorithm": "blake2b", "block_size": 4194304, "checksum": "2e" * 32}


def restore_record(status: str, written: int, phase: str | None, read_back: dict | None) -> dict:
    ended = status in ("completed", "failed", "cancelled")
    return {
        "id": "r-1",
        "backup_id": "b1",
        "node": "node1",
        "vm": "lab-vm",
        "name": "lab-vm-restored",
        "status": status,
        "phase": phase,
        "datastore": "LocalDS_0",
        "folder": "vm",
        "resource_pool": "DC0_C0/Resources",
        "power_on": False,
        "moref": "vm-77" if written else None,
        "created_at": "2026-12-01T14:00:00Z",
        "finished_at": "2026-12-01T14:01:00Z" if ended else None,
        "error": "disk0: read-back checksum differs" if status == "failed" else None,
        "warnings": ["NIC 1: network 'Lab Net' does not exist here, added disconnected"],
        "disks": [
            {
                "disk_id": "disk0",
                "capacity": CAPACITY,
                "bytes_written": written,
                "bytes_total": CAPACITY,
                "expected_checksum": POINT_SUM,
                "checksum": read_back,
                "verified": None if read_back is None else read_back == POINT_SUM,
            }
        ],
    }


class FakeHub:
    """Answers as the hub's restore API does; `final` is how the restore ends."""

    def __init__(
        self,
        final: str = "completed",
        refuse: tuple[int, str, str] | None = None,
        busy_polls: int = 0,
    ):
        self.final = final
        self.refuse = refuse
        # How many polls answer 503 first, as a hub too busy to serve them would.
        self.busy_polls = busy_polls
        self.polls = 0
        self.bodies: list[dict] = []
        self.queries: list[dict] = []
        self.cancelled: list[str] = []
        app = web.Application()
        app.router.add_post("/api/v1/backups/{id}/restore", self.start)
        app.router.add_get("/api/v1/restores", self.list)
        app.router.add_get("/api/v1/restores/{id}", self.get)
        app.router.add_post("/api/v1/restores/{id}/cancel", self.cancel)
        self.app = app

    @staticmethod
    def error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"error": code, "message": message}, status=status)

    def denied(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.error(401, "unauthorized", "invalid bearer token")
        if self.refuse:
            return self.error(*self.refuse)
        return None

    async def start(self, request: web.Request) -> web.Response:
        if (no := self.denied(request)) is not None:
            return no
        if request.match_info["id"] != "b1":
            return self.error(404, "backup_not_found", "backup b9 does not exist")
        self.bodies.append(await request.json())
        return web.json_response(restore_record("pending", 0, None, None), status=201)

    async def get(self, request: web.Request) -> web.Response:
        if (no := self.denied(request)) is not None:
            return no
        if request.match_info["id"] != "r-1":
            return self.error(404, "restore_not_found", "restore r-9 does not exist")
        if self.busy_polls:
            self.busy_polls -= 1
            return self.error(503, "busy", "the hub is busy")
        self.polls += 1
        if self.polls == 1:
            return web.json_response(restore_record("running", CAPACITY // 2, "writing", None))
        if self.polls == 2:
            return web.json_response(restore_record("running", CAPACITY, "verifying", None))
        read_back = POINT_SUM if self.final == "completed" else OTHER_SUM
        return web.json_response(restore_record(self.final, CAPACITY, None, read_back))

    async def list(self, request: web.Request) -> web.Response:
        if (no := self.denied(request)) is not None:
            return no
        self.queries.append(dict(request.query))
        return web.json_response(
            [
                restore_record("completed", CAPACITY, None, POINT_SUM),
                restore_record("failed", CAPACITY, None, OTHER_SUM) | {"id": "r-0"},
            ]
        )

    async def cancel(self, request: web.Request) -> web.Response:
        if (no := self.denied(request)) is not None:
            return no
        if request.match_info["id"] != "r-1":
            return self.error(409, "not_active", "restore r-0 has ended")
        self.cancelled.append(request.match_info["id"])
        return web.json_response(restore_record("running", 0, "cleaning_up", None))


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    return write_token(tmp_path, TOKEN)


class Hub:
    def __init__(self, fake: FakeHub, url: str, token_file: str) -> None:
        self.fake, self.url, self.token_file = fake, url, token_file

    async def run(self, *args: str) -> tuple[int, str, str]:
        return await run_sendense(
            "restore", *args, "--hub", self.url, "--token-file", self.token_file
        )


async def serving(fake: FakeHub, token_file: str):
    port = free_port()
    runner = await serve_app(fake.app, "127.0.0.1", port)
    return runner, Hub(fake, f"http://127.0.0.1:{port}", token_file)


@pytest.fixture
async def hub(request, token_file):
    fake = getattr(request, "param", None) or FakeHub()
    runner, h = await serving(fake, token_file)
    yield h
    await runner.cleanup()


# -- start ---------------------------------------------------------------------


async def test_start_sends_the_contract_body_and_nulls_for_the_source_vms_defaults(hub):
    rc, out, err = await hub.run("start", "--backup", "b1", "--to", "lab-vm-restored")
    assert rc == 0, err
    assert out.strip() == "restore r-1 pending"
    assert hub.fake.bodies == [
        {
            "name": "lab-vm-restored",
            "datastore": None,
            "folder": None,
            "resource_pool": None,
            "power_on": False,
        }
    ]


async def test_start_passes_every_placement_option_on(hub):
    rc, _, err = await hub.run(
        "start", "--backup", "b1", "--to", "copy", "--datastore", "LocalDS_1",
        "--folder", "vm/restored", "--resource-pool", "DC0_C0/Resources/low", "--power-on",
    )  # fmt: skip
    assert rc == 0, err
    assert hub.fake.bodies == [
        {
            "name": "copy",
            "datastore": "LocalDS_1",
            "folder": "vm/restored",
            "resource_pool": "DC0_C0/Resources/low",
            "power_on": True,
        }
    ]


async def test_start_wait_off_a_tty_prints_plain_progress_lines_then_the_checked_disks(hub):
    rc, out, err = await hub.run("start", "--backup", "b1", "--to", "lab-vm-restored", "--wait")
    assert rc == 0, err
    assert err == ""
    lines = out.splitlines()
    assert "phase: writing" in lines
    assert "phase: verifying" in lines
    assert f"disk0: {CAPACITY // 2:,} of {CAPACITY:,} bytes (50%)" in lines
    assert f"disk0: {CAPACITY:,} of {CAPACITY:,} bytes (100%)" in lines
    assert lines.index("phase: writing") < lines.index("phase: verifying")
    assert "status completed" in out
    assert f"blake2b:{POINT_SUM['checksum']}" in out.replace("\n", "").replace(" ", "")


@pytest.mark.parametrize("hub", [FakeHub(busy_polls=2)], indirect=True)
async def test_start_wait_outlasts_a_hub_too_busy_to_answer_a_poll(hub):
    rc, out, err = await hub.run("start", "--backup", "b1", "--to", "lab-vm-restored", "--wait")
    assert rc == 0, err
    assert hub.fake.busy_polls == 0
    assert err.splitlines() == ["sendense: warning: the hub is busy (HTTP 503 busy); still waiting"]
    assert "status completed" in out


@pytest.mark.parametrize("hub", [FakeHub("failed"), FakeHub("cancelled")], indirect=True)
async def test_start_wait_exits_1_with_one_line_when_the_restore_does_not_complete(hub):
    rc, out, err = await hub.run(
        "start", "--backup", "b1", "--to", "lab-vm-restored", "--wait", "--json"
    )
    assert rc == 1
    record = json.loads(out)
    assert record["status"] == hub.fake.final
    reason = record["error"] or "no reason"
    assert err.splitlines() == [f"sendense: error: restore r-1 {hub.fake.final}: {reason}"]


REFUSALS = [
    (409, "vm_exists", "a VM named lab-vm-restored already exists"),
    (422, "unknown_datastore", "datastore NoSuchDS does not exist"),
    (409, "chain_broken", "restore point b1: /r/lab-vm/b0/disk0.qcow2 is missing"),
    (409, "not_completed", "backup b1 is failed, not completed"),
]


@pytest.mark.parametrize(
    "hub", [FakeHub(refuse=r) for r in REFUSALS], ids=[r[1] for r in REFUSALS], indirect=True
)
async def test_a_refused_start_exits_2_with_the_hubs_one_line_message(hub):
    status, code, message = hub.fake.refuse
    rc, out, err = await hub.run("start", "--backup", "b1", "--to", "lab-vm-restored", "--wait")
    assert rc == 2
    assert out == ""
    assert err.splitlines() == [f"sendense: refused: {message} (HTTP {status} {code})"]


async def test_an_unknown_backup_is_refused_with_exit_2(hub):
    rc, _, err = await hub.run("start", "--backup", "b9", "--to", "x")
    assert rc == 2
    assert err.splitlines() == [
        "sendense: refused: backup b9 does not exist (HTTP 404 backup_not_found)"
    ]


@pytest.fixture
def wrong_token_file(tmp_path: Path) -> str:
    p = tmp_path / "other-token"
    p.write_text("not-the-token\n")
    p.chmod(0o600)
    return str(p)


async def test_a_wrong_token_is_refused_with_exit_2(hub, wrong_token_file):
    hub.token_file = wrong_token_file
    rc, _, err = await hub.run("start", "--backup", "b1", "--to", "x")
    assert rc == 2
    assert err.splitlines() == ["sendense: refused: invalid bearer token (HTTP 401 unauthorized)"]


@pytest.mark.parametrize(
    ("args", "missing"),
    [(["--to", "x"], "--backup"), (["--backup", "b1"], "--to")],
)
async def test_start_without_backup_or_name_is_bad_usage_and_sends_nothing(hub, args, missing):
    rc, _, err = await hub.run("start", *args)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and missing in err
    assert hub.fake.bodies == []


async def test_an_unreachable_hub_is_a_failure_not_bad_usage(token_file):
    hub = Hub(FakeHub(), f"http://127.0.0.1:{free_port()}", token_file)
    rc, _, err = await hub.run("start", "--backup", "b1", "--to", "x")
    assert rc == 1
    assert len(err.strip().splitlines()) == 1 and "cannot reach" in err


# -- list, show, cancel ----------------------------------------------------------


async def test_list_passes_its_filters_as_the_hubs_query(hub):
    rc, out, err = await hub.run(
        "list", "--node", "node1", "--status", "completed", "--backup", "b1", "--json"
    )
    assert rc == 0, err
    assert hub.fake.queries == [{"node": "node1", "status": "completed", "backup": "b1"}]
    assert [r["id"] for r in json.loads(out)] == ["r-1", "r-0"]


async def test_list_refuses_an_unknown_status_before_asking_the_hub(hub):
    rc, _, err = await hub.run("list", "--status", "done")
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "done" in err
    assert hub.fake.queries == []


async def test_show_prints_each_disks_verification_and_both_checksums(hub):
    hub.fake.polls = 2  # the next answer is the ended record
    rc, out, err = await hub.run("show", "r-1")
    assert rc == 0, err
    flat = out.replace("\n", "").replace(" ", "").replace("│", "")
    assert f"blake2b:{POINT_SUM['checksum']}" in flat
    assert "disk0" in out and "yes" in out
    assert "warning: NIC 1: network 'Lab Net' does not exist here" in out


async def test_show_of_an_unknown_restore_exits_2_with_the_hubs_message(hub):
    rc, _, err = await hub.run("show", "r-9")
    assert rc == 2
    assert err.splitlines() == [
        "sendense: refused: restore r-9 does not exist (HTTP 404 restore_not_found)"
    ]


async def test_cancel_asks_the_hub_and_a_cancel_too_late_is_refused(hub):
    rc, out, err = await hub.run("cancel", "r-1")
    assert rc == 0, err
    assert hub.fake.cancelled == ["r-1"]
    assert out.strip() == "restore r-1 running"
    rc, _, err = await hub.run("cancel", "r-0")
    assert rc == 2
    assert err.splitlines() == ["sendense: refused: restore r-0 has ended (HTTP 409 not_active)"]


# -- formatting --------------------------------------------------------------------


def rendered(renderable) -> str:
    console = Console(record=True, width=300)
    console.print(renderable)
    return console.export_text()


def test_disk_table_says_verified_only_when_the_read_back_matches():
    good = rendered(disk_table(restore_record("completed", CAPACITY, None, POINT_SUM)))
    bad = rendered(disk_table(restore_record("failed", CAPACITY, None, OTHER_SUM)))
    pending = rendered(disk_table(restore_record("running", 0, "writing", None)))
    row = next(line for line in good.splitlines() if "disk0" in line)
    assert "yes" in row and f"{CAPACITY:,}" in row
    assert row.count(POINT_SUM["checksum"]) == 2
    bad_row = next(line for line in bad.splitlines() if "disk0" in line)
    assert "NO" in bad_row
    assert POINT_SUM["checksum"] in bad_row and OTHER_SUM["checksum"] in bad_row
    pending_row = next(line for line in pending.splitlines() if "disk0" in line)
    assert "yes" not in pending_row and "NO" not in pending_row


def test_summary_lines_name_the_placement_error_and_warnings():
    lines = summary_lines(restore_record("failed", CAPACITY, None, OTHER_SUM))
    assert lines[0].startswith("status failed")
    assert "new VM lab-vm-restored (vm-77)" in lines[1]
    assert "datastore LocalDS_0" in lines[1] and "resource_pool DC0_C0/Resources" in lines[1]
    assert "error: disk0: read-back checksum differs" in lines
    assert lines[-1].startswith("warning: NIC 1")


def test_summary_of_a_vm_not_yet_created_says_so():
    lines = summary_lines(restore_record("pending", 0, None, None))
    assert "(not created)" in lines[1]
    assert not any(line.startswith("error:") for line in lines)


def test_list_table_counts_verified_disks():
    text = rendered(
        list_table(
            [
                restore_record("completed", CAPACITY, None, POINT_SUM),
                restore_record("running", 0, "writing", None) | {"id": "r-2"},
            ]
        )
    )
    done = next(line for line in text.splitlines() if "r-1" in line)
    running = next(line for line in text.splitlines() if "r-2" in line)
    assert "1/1" in done and "completed" in done
    assert "0/1" in running and "running" in running
