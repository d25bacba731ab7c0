"""Faults mid-restore on the whole stack (tests/fixtures/stack.py): the tunnel dropped
while the node writes the new VM's disks (the restore resumes and completes, bit for
bit), and a cancel while it writes (nothing of the restore stays anywhere).

Its own module, so its own simulator: the VM is re-seeded with disks large enough that
a restore is still writing when the fault lands. Needs every engineer's half of issue
14; runs once the branches are merged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.fixtures.stack import Stack, running_stack, wait_until
from tests.fixtures.stack_restores import (
    ACTIVE,
    assert_nothing_of_restore_left,
    assert_restored,
    backup,
    restore_record,
    start_restore,
    wait_restore,
)
from tests.fixtures.vcsim import VcsimLab

OUTAGE = 10.0


@pytest.fixture(scope="module")
def stack(vcsim: VcsimLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(vcsim, tmp_path_factory.mktemp("restore-faults")) as s:
        yield s


@pytest.fixture(scope="module")
def point(vcsim: VcsimLab, stack: Stack) -> dict:
    vcsim.reseed([384 << 20, 256 << 20, 320 << 20], seed="restore-faults")
    return backup(stack, vcsim.vm, "full")


def wait_writing(stack: Stack, restore_id: str) -> None:
    """Until the node has written some of a disk (and not all of every disk)."""

    def writing() -> bool:
        record = restore_record(stack, restore_id)
        assert record["status"] in ACTIVE, record
        return any((d.get("bytes_written") or 0) > 0 for d in record["disks"])

    wait_until(writing, f"restore {restore_id} to write", stack.procs, timeout=300)


def test_the_tunnel_dropped_mid_restore_resumes_and_completes(vcsim, stack, point):
    restore = start_restore(stack, point["id"], "restored-outage")
    wait_writing(stack, restore["id"])
    stack.sshd.kill()
    time.sleep(OUTAGE)
    stack.sshd.start()
    stack.wait_ready()
    record = wait_restore(stack, restore["id"])
    assert_restored(vcsim, stack, record, point)
    metrics = stack.metrics()
    assert metrics["allocated"] == 0 and metrics["qemu_nbd_processes"] == 0, metrics
    # The outage really hit the restore: the tunnel lost its connection and came back.
    tunnel_log = stack.proc("tunnel").log.read_text()
    assert tunnel_log.count("event=connected") >= 2, tunnel_log[-2000:]


def test_a_cancel_mid_restore_leaves_no_vm_no_file_no_export_and_no_slot(vcsim, stack, point):
    restore = start_restore(stack, point["id"], "restored-cancelled")
    wait_writing(stack, restore["id"])
    stack.api("POST", f"/api/v1/restores/{restore['id']}/cancel")
    record = wait_restore(stack, restore["id"])
    assert record["status"] == "cancelled", record
    assert_nothing_of_restore_left(vcsim, stack, "restored-cancelled")
    # Cancelling an ended restore is refused, and changes nothing.
    r = stack.cli(
        "restore", "cancel", restore["id"],
        "--hub", stack.hub_url, "--token-file", str(stack.node_token),
    )  # fmt: skip
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "not_active" in r.stderr and len(r.stderr.splitlines()) == 1
    assert restore_record(stack, restore["id"])["status"] == "cancelled"
