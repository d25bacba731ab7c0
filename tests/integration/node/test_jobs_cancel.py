"""A cancel at every step of a node's backup leaves nothing behind and ends the job cancelled.

The simulator takes STEP_MS for each login and each snapshot creation and
removal, so the test sees each step and cancels inside it; the copy goes to
slow nbdkit targets; the nbdkit sources being started are frozen (SIGSTOP)
before they answer. After each cancel: no nbdkit of the job (/proc), no
snapshot, the job `cancelled`, its final report delivered and unspooled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from pathlib import Path

import pytest

from tests.fixtures.node_proc import nbdkit_sources
from tests.fixtures.vcsim import VcsimLab, remaining_snapshots
from tests.integration.node.test_outbox import wait_for


class FreezeStartingSources:
    """SIGSTOP every nbdkit of `lab` that has not written its PID file yet (it is starting).

    One that got further is let go again: frozen while answering the node's
    probe it would hold the probe thread, not the step under test.
    """

    def __init__(self, lab: VcsimLab) -> None:
        self.lab = lab
        self.frozen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="freeze-nbdkit", daemon=True)

    def __enter__(self) -> FreezeStartingSources:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for pid in self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _run(self) -> None:
        seen: set[int] = set()
        while not self._stop.is_set():
            for pid in nbdkit_sources(self.lab):
                if pid not in seen:
                    seen.add(pid)
                    self._freeze(pid)
            self._stop.wait(0.001)

    def _freeze(self, pid: int) -> None:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            os.kill(pid, signal.SIGSTOP)
        except (OSError, UnicodeDecodeError):
            return
        pidfile = Path(argv[argv.index("--pidfile") + 1])
        if pidfile.exists():
            os.kill(pid, signal.SIGCONT)
        else:
            self.frozen.append(pid)


PHASES = ["connecting", "creating_snapshot", "starting_sources", "copying", "removing_snapshot"]


@pytest.mark.parametrize("phase", PHASES)
async def test_a_cancel_in_each_step_leaves_nothing_and_is_reported(
    slow_vcsim, hub, make_node, qemu_nbd_target, slow_nbd_target, phase
):
    await hub.up()
    node = await make_node(slow_vcsim, hub)
    lab = slow_vcsim
    if phase == "copying":
        uris = {d.disk_id: slow_nbd_target(d.capacity).uri for d in lab.disks}
    else:
        uris = {d.disk_id: qemu_nbd_target(d.capacity, export=d.disk_id).uri for d in lab.disks}
    job_id = f"c-{phase}"
    body = {
        "job_id": job_id,
        "vm": lab.vm,
        "nbd_targets": ",".join(f"{k}:{u}" for k, u in uris.items()),
    }
    freezer = FreezeStartingSources(lab) if phase == "starting_sources" else None
    with freezer or contextlib.nullcontext():
        async with node.client() as client:
            async with client.post("/api/v1/backup/start", json=body) as resp:
                assert resp.status == 202, await resp.text()
            job = node.jobs.get(job_id)
            await wait_for(lambda: job.phase == phase or job.status != "running", f"step {phase}")
            if phase == "starting_sources":
                await wait_for(lambda: freezer.frozen, "an nbdkit source to freeze")
            async with client.post(f"/api/v1/backup/{job_id}/cancel") as resp:
                assert resp.status == 202
                assert (await resp.json())["phase"] == phase
            final = await hub.final(job_id)
            async with client.get(f"/api/v1/backup/{job_id}") as resp:
                answer = await resp.json()
    assert (final["status"], final["error"]) == ("failed", "cancelled")
    assert (answer["status"], answer["phase"]) == ("cancelled", None)
    assert nbdkit_sources(lab) == []
    assert remaining_snapshots(lab) == []
    record = json.loads((node.spool / "jobs" / f"{job_id}.json").read_text())
    assert record["status"] == "cancelled"
    await wait_for(lambda: not (node.spool / "reports" / f"{job_id}.json").exists(), "delivery")


async def test_a_stop_gives_up_on_a_backup_after_its_bound_leaving_a_running_record(
    slow_vcsim, hub, make_node, qemu_nbd_target
):
    await hub.up()
    # Shorter than the simulator's STEP_MS for creating the snapshot, then removing it.
    node = await make_node(slow_vcsim, hub, stop_wait=0.2)
    lab = slow_vcsim
    uris = {d.disk_id: qemu_nbd_target(d.capacity, export=d.disk_id).uri for d in lab.disks}
    body = {
        "job_id": "c-stop",
        "vm": lab.vm,
        "nbd_targets": ",".join(f"{k}:{u}" for k, u in uris.items()),
    }
    async with node.client() as client, client.post("/api/v1/backup/start", json=body) as resp:
        assert resp.status == 202, await resp.text()
    job = node.jobs.get("c-stop")
    await wait_for(lambda: job.phase == "creating_snapshot", "the snapshot's creation")
    await node.jobs.shutdown()
    assert job.task is not None and not job.task.done(), "the stop waited past its bound"
    # Left behind as a crash would be: the record still says running.
    record = json.loads((node.spool / "jobs" / "c-stop.json").read_text())
    assert record["status"] == "running"
    await job.task  # this process lives on, so the backup ends by itself here
    assert remaining_snapshots(lab) == []
