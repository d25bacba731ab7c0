"""Cancel, and kill -9 of a qemu-nbd, at each phase of a job: nothing it started outlives it.

Real hub, real qemu-img and qemu-nbd; each hub step is held at its start by a
gate around the real step, and the stand-in node holds its start call.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from sendense_tools.hub import jobs as jobs_module
from sendense_tools.hub import lifecycle
from sendense_tools.hub.exports import Export
from sendense_tools.hub.verify import ImageChecker

from .conftest import Gate, MiB, assert_left_nothing, qemu_nbd_under, wait_for

pytestmark = pytest.mark.asyncio

DISKS = 4
STARTING = ["reserving", "creating images", *(f"starting export {k}" for k in range(DISKS))]
PHASES = [*STARTING, "telling the node", "copying", "flushing", "verifying"]
# The node's final report was taken: too late to cancel, the job completes.
FINALIZING = ("flushing", "verifying")


@dataclass
class Held:
    backup_id: str
    start: asyncio.Task
    release: Callable[[], None]


async def pending_id(h) -> str:
    _, rows = await h.call("GET", "/api/v1/backups?status=pending")
    assert len(rows) == 1, rows
    return rows[0]["id"]


async def hold(h, monkeypatch, phase: str) -> Held:
    """Start a DISKS-disk backup and hold it at the start of `phase`."""
    gate = Gate()
    if phase in ("reserving", "creating images"):
        # reserving: slots and record are there, no image yet; creating: the last one.
        gate.at = 0 if phase == "reserving" else DISKS - 1
        monkeypatch.setattr(jobs_module, "create_image", gate.wrap(jobs_module.create_image))
    elif phase.startswith("starting export"):
        gate.at = int(phase.rsplit(" ", 1)[1])
        monkeypatch.setattr(lifecycle, "start_export", gate.wrap(lifecycle.start_export))
    elif phase == "telling the node":
        h.node.hold_start = gate.opened
        gate.reached = h.node.start_entered
    elif phase == "flushing":
        monkeypatch.setattr(Export, "flush", gate.wrap(Export.flush))
    elif phase == "verifying":
        monkeypatch.setattr(ImageChecker, "check", gate.wrap(ImageChecker.check))
    start = asyncio.create_task(h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"}))
    if phase in STARTING or phase == "telling the node":
        await wait_for(gate.reached, phase)
        return Held(await pending_id(h), start, gate.opened.set)
    code, record = await start
    assert code == 201, record
    if phase == "copying":
        await h.copy(record["id"])
        gate.opened.set()
    else:
        disks = await h.copy(record["id"])
        report = {"status": "completed", "snapshot": "snapshot-1", "disks": disks}
        code, body = await h.call(
            "PUT", f"/api/v1/backups/{record['id']}/progress", report, token=h.tokens["node1"]
        )
        assert code == 202, body
        await wait_for(gate.reached, phase)
    return Held(record["id"], start, gate.opened.set)


async def job_pids(h, backup_id: str) -> list[int]:
    _, rows = await h.call("GET", "/api/v1/nbd/ports")
    return [r["pid"] for r in rows if r["job_id"] == backup_id and r["pid"]]


@pytest.mark.parametrize("phase", PHASES)
async def test_cancel_at_each_phase_leaves_nothing(make_hub, monkeypatch, tmp_path, phase):
    h = await make_hub(ports=DISKS)
    h.node.vms["web01"] = [16 * MiB] * DISKS
    held = await hold(h, monkeypatch, phase)
    if phase == "verifying":
        # The job's exports are stopped; only the hub's own read-only readers run.
        assert qemu_nbd_under(tmp_path, writers=True) == [], "an export outlived the flush"
    code, body = await h.call("POST", f"/api/v1/backups/{held.backup_id}/cancel")
    held.release()
    start_code, start_body = await held.start
    final = await h.wait_status(held.backup_id)
    if phase in FINALIZING:
        assert (code, body["error"]) == (409, "finishing")
        assert final["status"] == "completed", final["error"]
    else:
        assert code == 200, body
        assert (final["status"], final["error"]) == ("cancelled", "cancelled by admin")
    if phase in STARTING or phase == "telling the node":
        assert (start_code, start_body["error"]) == (409, "start_aborted"), start_body
    else:
        assert start_code == 201
    await assert_left_nothing(h, tmp_path, final)


KILL_PHASES = [
    *(f"starting export {k}" for k in range(1, DISKS)),
    "telling the node",
    "copying",
    "flushing",
]


@pytest.mark.parametrize("phase", KILL_PHASES)
async def test_kill_9_of_a_qemu_nbd_at_each_phase_leaves_nothing(
    make_hub, monkeypatch, tmp_path, phase
):
    h = await make_hub(ports=DISKS)
    h.node.vms["web01"] = [16 * MiB] * DISKS
    held = await hold(h, monkeypatch, phase)
    pids = await job_pids(h, held.backup_id)
    assert pids, "no qemu-nbd to kill"
    # The first export dies while the job is held (for flushing: the one being flushed).
    os.kill(pids[0], signal.SIGKILL)
    if phase == "flushing":
        held.release()  # its flush of the dead export is what fails the job
    final = await h.wait_status(held.backup_id)
    # Held steps resume only now: what a job does after its end must not outlive it.
    held.release()
    start_code, start_body = await held.start
    assert final["status"] == "failed"
    assert "disk0" in final["error"], final["error"]
    if phase != "flushing":  # there the flush's connection fails first
        assert "SIGKILL" in final["error"], final["error"]
    if phase in STARTING or phase == "telling the node":
        assert (start_code, start_body["error"]) == (502, "export_failed"), start_body
    await assert_left_nothing(h, tmp_path, await h.wait_status(held.backup_id))


async def test_a_second_client_cancels_a_12_disk_backup_while_pending(
    make_hub, monkeypatch, tmp_path
):
    """The issue's reproduction: 12 disks, [nbd] tls_psk = false, cancel while pending."""
    h = await make_hub(ports=12, tls_psk=False)
    h.node.vms["big01"] = [16 * MiB] * 12
    gate = Gate(at=6)
    monkeypatch.setattr(lifecycle, "start_export", gate.wrap(lifecycle.start_export))
    start = asyncio.create_task(h.call("POST", "/api/v1/backups", {"vm": "big01", "node": "node1"}))
    await wait_for(gate.reached, "its seventh export")
    backup_id = await pending_id(h)
    code, body = await h.call("POST", f"/api/v1/backups/{backup_id}/cancel")
    gate.opened.set()
    assert code == 200 and body["status"] == "cancelled", body
    start_code, _ = await start
    await assert_left_nothing(h, tmp_path, await h.wait_status(backup_id))
    assert start_code == 409
