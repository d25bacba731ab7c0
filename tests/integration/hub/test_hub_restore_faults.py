"""Restores that must not happen or must not complete, through a real hub with real
qemu-nbd: each is refused with its code, or ends failed/cancelled, and leaves nothing
but its record."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from sendense_tools.hub import lifecycle

from .chains import Vm
from .conftest import Gate, MiB, wait_for
from .restoring import assert_restore_left_nothing, point, restore, scripted_node, wait_restore

pytestmark = pytest.mark.asyncio


async def test_a_wrong_read_back_checksum_fails_even_when_the_node_says_verified(
    make_hub, tmp_path
):
    h = await make_hub(ports=4)
    full = await point(h, Vm(h))
    script = scripted_node(h, corrupt={"disk1"})
    code, started = await restore(h, full["id"])
    assert code == 201, started
    record = await wait_restore(h, started["id"])
    assert record["status"] == "failed"
    assert record["error"].startswith("disk1: read back 0000"), record["error"]
    assert "disk0" not in record["error"]
    # The hub's own comparison, not the node's `verified: true`.
    assert [d["verified"] for d in record["disks"]] == [True, False]
    assert script.answers == [200, 202]
    await assert_restore_left_nothing(h, tmp_path, started["id"])


def damage(image: Path, how: str) -> None:
    if how == "missing":
        image.unlink()
    elif how == "truncated":
        os.truncate(image, image.stat().st_size // 2)
    else:
        with image.open("r+b") as f:
            f.write(b"XXXX")  # over the qcow2 magic


async def _broken(h, how: str) -> tuple[dict, Path]:
    """An incremental point whose full's disk0 image is missing or damaged."""
    vm = Vm(h)
    full = await point(h, vm)
    inc = await point(h, vm, "incremental")
    image = Path(full["disk_results"][0]["qcow2_path"])
    await asyncio.to_thread(damage, image, how)
    return inc, image


async def _hold_the_pool(h) -> dict:
    """A running backup of a two-disk VM: it holds both slots of a two-slot pool."""
    h.node.vms["db01"] = [4 * MiB, 4 * MiB]
    code, busy = await h.call("POST", "/api/v1/backups", {"vm": "db01", "node": "node1"})
    assert code == 201, busy
    return busy


@pytest.mark.parametrize("how", ["missing", "truncated", "header"])
async def test_a_broken_chain_is_refused_before_any_slot_export_or_node_call(
    make_hub, tmp_path, how
):
    # Two slots, and a running backup of a two-disk VM holding both: a restore that took
    # a slot before its chain check would answer 503, not chain_broken.
    h = await make_hub(ports=2)
    inc, image = await _broken(h, how)
    script = scripted_node(h)
    busy = await _hold_the_pool(h)
    code, body = await restore(h, inc["id"])
    assert (code, body["error"]) == (409, "chain_broken"), body
    assert body["message"].startswith(f"{image}: "), body
    assert "\n" not in body["message"]
    why = {"missing": "missing", "truncated": "damaged", "header": "damaged"}[how]
    assert why in body["message"], body
    assert script.starts == []
    assert await h.call("GET", "/api/v1/restores") == (200, [])
    code, ports = await h.call("GET", "/api/v1/nbd/ports")
    assert {p["job_id"] for p in ports} == {busy["id"]}


async def test_a_sound_point_asked_for_while_the_pool_is_full_is_a_503(make_hub, tmp_path):
    h = await make_hub(ports=2)
    full = await point(h, Vm(h))
    script = scripted_node(h)
    await _hold_the_pool(h)
    code, body = await restore(h, full["id"])
    assert (code, body["error"]) == (503, "pool_exhausted"), body
    assert script.starts == [] and await h.call("GET", "/api/v1/restores") == (200, [])


async def test_a_point_that_is_not_completed_is_refused(make_hub):
    h = await make_hub(ports=4)
    vm = Vm(h)
    running = await vm.start()
    script = scripted_node(h)
    code, body = await restore(h, running["id"])
    assert (code, body["error"]) == (409, "not_completed"), body
    assert body["message"] == (
        f"backup {running['id']} is running: only a completed point restores"
    )
    await vm.copy(running, "full", status="failed")
    failed = await h.wait_status(running["id"])
    code, body = await restore(h, failed["id"])
    assert (code, body["error"]) == (409, "not_completed"), body
    assert script.starts == []
    code, body = await restore(h, "no-such-backup")
    assert (code, body["error"]) == (404, "backup_not_found"), body


@pytest.mark.parametrize(
    "status,code,message",
    [
        (409, "vm_exists", "a VM named 'web01-restored' exists"),
        (422, "unknown_datastore", "datastore 'nope' not found"),
        (422, "unknown_folder", "folder 'vm/nope' not found"),
    ],
)
async def test_a_node_refusal_is_passed_on_and_leaves_nothing(
    make_hub, tmp_path, status, code, message
):
    h = await make_hub(ports=4, tls_psk=True)
    full = await point(h, Vm(h))
    scripted_node(h, refuse=(status, code, message))
    answer, body = await restore(h, full["id"], datastore="nope")
    assert (answer, body["error"]) == (status, code), body
    assert body["message"] == f"node node1 refused the restore: {message}"
    code, records = await h.call("GET", "/api/v1/restores")
    assert [(r["status"], r["error"]) for r in records] == [("failed", body["message"])]
    await assert_restore_left_nothing(h, tmp_path, records[0]["id"])


async def test_cancel_stops_the_exports_frees_the_slots_and_tells_the_node(make_hub, tmp_path):
    h = await make_hub(ports=4, tls_psk=True)
    full = await point(h, Vm(h))
    script = scripted_node(h, hold=asyncio.Event())
    code, started = await restore(h, full["id"])
    assert code == 201, started
    await wait_for(script.reading, "reading")
    assert (h.hub.jobs.key_root / started["id"]).is_dir()
    code, record = await h.call("POST", f"/api/v1/restores/{started['id']}/cancel")
    assert code == 200, record
    assert (record["status"], record["error"]) == ("cancelled", "cancelled by admin")
    assert script.cancels == [started["id"]]
    await assert_restore_left_nothing(h, tmp_path, started["id"])
    code, body = await h.call("POST", f"/api/v1/restores/{started['id']}/cancel")
    assert (code, body["error"]) == (409, "not_active"), body
    # A report of the ended restore is refused: the node stops the job.
    late = {"status": "running", "phase": "writing", "disks": []}
    code, body = await h.call(
        "PUT", f"/api/v1/restores/{started['id']}/progress", late, token=h.tokens["node1"]
    )
    assert (code, body["error"]) == (409, "not_active"), body


async def test_an_export_that_dies_fails_the_restore(make_hub, tmp_path):
    h = await make_hub(ports=4)
    full = await point(h, Vm(h))
    script = scripted_node(h, hold=asyncio.Event())
    code, started = await restore(h, full["id"])
    assert code == 201, started
    await wait_for(script.reading, "reading")
    _, ports = await h.call("GET", "/api/v1/nbd/ports")
    os.kill(ports[0]["pid"], signal.SIGKILL)
    record = await wait_restore(h, started["id"])
    assert record["status"] == "failed"
    assert record["error"].startswith(f"qemu-nbd for {ports[0]['disk_id']} (slot "), record
    assert script.cancels == [started["id"]]
    await assert_restore_left_nothing(h, tmp_path, started["id"])


async def test_a_silent_node_that_does_not_know_the_restore_fails_it(make_hub, tmp_path):
    h = await make_hub(ports=4, stall_timeout=0.5)
    full = await point(h, Vm(h))
    script = scripted_node(h, hold=asyncio.Event())
    code, started = await restore(h, full["id"])
    assert code == 201, started
    record = await wait_restore(h, started["id"])
    assert record["status"] == "failed"
    assert record["error"] == (
        f"node node1 does not know restore {started['id']} (node restarted?)"
    )
    assert script.cancels == [started["id"]]
    await assert_restore_left_nothing(h, tmp_path, started["id"])


async def test_a_silent_node_that_finished_is_asked_and_its_result_taken(make_hub, tmp_path):
    h = await make_hub(ports=4, stall_timeout=0.5)
    full = await point(h, Vm(h))
    script = scripted_node(h, report=False)
    code, started = await restore(h, full["id"])
    assert code == 201, started
    record = await wait_restore(h, started["id"])
    assert record["status"] == "completed", record["error"]
    assert all(d["verified"] for d in record["disks"])
    assert script.answers == []
    await assert_restore_left_nothing(h, tmp_path, started["id"])


async def test_bad_restore_requests_are_422_and_start_nothing(make_hub):
    h = await make_hub(ports=4)
    full = await point(h, Vm(h))
    script = scripted_node(h)
    for body in (
        {},
        {"name": ""},
        {"name": "x" * 81},
        {"name": "ok", "surprise": True},
        {"name": "ok", "power_on": "maybe"},
    ):
        code, answer = await h.call("POST", f"/api/v1/backups/{full['id']}/restore", body)
        assert (code, answer["error"]) == (422, "invalid"), (body, answer)
    assert script.starts == []
    assert await h.call("GET", "/api/v1/restores") == (200, [])


async def test_a_name_being_restored_is_refused_a_second_time(make_hub, tmp_path):
    h = await make_hub(ports=8)
    full = await point(h, Vm(h))
    script = scripted_node(h, hold=asyncio.Event())
    code, first = await restore(h, full["id"])
    assert code == 201, first
    code, body = await restore(h, full["id"])
    assert (code, body["error"]) == (409, "vm_exists"), body
    assert first["id"] in body["message"]
    assert len(script.starts) == 1
    assert script.hold is not None
    script.hold.set()
    record = await wait_restore(h, first["id"])
    assert record["status"] == "completed", record["error"]
    await assert_restore_left_nothing(h, tmp_path, first["id"])


async def test_cancel_while_the_exports_start_ends_the_start_and_leaves_nothing(
    make_hub, tmp_path, monkeypatch
):
    h = await make_hub(ports=4)
    full = await point(h, Vm(h))
    script = scripted_node(h)
    gate = Gate(at=1)
    monkeypatch.setattr(lifecycle, "start_export", gate.wrap(lifecycle.start_export))
    starting = asyncio.create_task(restore(h, full["id"]))
    await wait_for(gate.reached, "starting its second export")
    _, pending = await h.call("GET", "/api/v1/restores?status=pending")
    assert len(pending) == 1, pending
    code, record = await h.call("POST", f"/api/v1/restores/{pending[0]['id']}/cancel")
    assert code == 200, record
    assert (record["status"], record["error"]) == ("cancelled", "cancelled by admin")
    gate.opened.set()
    code, body = await starting
    assert (code, body["error"]) == (409, "start_aborted"), body
    assert script.starts == [] and script.cancels == []
    await assert_restore_left_nothing(h, tmp_path, pending[0]["id"])
