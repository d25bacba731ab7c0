"""Restore through the whole product on loopback (tests/fixtures/stack.py: real hub,
node, asyncssh tunnel through a real sshd, the vCenter simulator, qemu-nbd): a full and
an incremental restore point back as new VMs, bit for bit, and the refusals that must
come before anything is created. Faults mid-restore: tests/integration/test_restore_faults.py.

These need every engineer's half of issue 14 (hardware recorded by the node, the hub's
restore API and exports, the node's restore job): they run once the branches are merged.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sendense_tools.lab.change import change_vm
from tests.fixtures.stack import Stack, running_stack
from tests.fixtures.stack_restores import (
    assert_nothing_of_restore_left,
    assert_restored,
    backup,
    http_error,
    new_vm_disks,
    placement,
    power_state,
    restore_and_wait,
    sha256_of_file,
    source_unchanged,
    start_restore,
    vm_dir,
    vm_exists,
    wait_backup,
)
from tests.fixtures.vcsim import VcsimLab


@pytest.fixture(scope="module")
def stack(vcsim: VcsimLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(vcsim, tmp_path_factory.mktemp("restore-stack")) as s:
        yield s


@dataclass(frozen=True)
class Points:
    full: dict
    incremental: dict
    changed: dict[str, str]  # disk id -> SHA-256 of the VM's disks after the change


@pytest.fixture(scope="module")
def points(vcsim: VcsimLab, stack: Stack) -> Points:
    """A full, the lab's change to every disk, then an incremental on the full."""
    full = backup(stack, vcsim.vm, "full")
    session = vcsim.session()
    try:
        changed = {d.disk_id: d.sha256 for d in change_vm(session, vcsim.vm, "restore-test")}
    finally:
        session.close()
    incremental = backup(stack, vcsim.vm, "incremental")
    assert incremental["mode"] == "incremental" and incremental["parent"] == full["id"]
    return Points(full, incremental, changed)


def test_the_full_point_comes_back_as_a_new_vm_bit_for_bit(vcsim, stack, points):
    restore = restore_and_wait(stack, points.full["id"], "restored-full")
    assert_restored(vcsim, stack, restore, points.full)
    # The full's disks are the seed, not the VM as it is now (read independently of the hub).
    files = new_vm_disks(vcsim, "restored-full")
    assert {k: sha256_of_file(*v) for k, v in files.items()} == vcsim.sha256s
    assert restore["vm"] == vcsim.vm
    assert restore["power_on"] is False
    assert power_state(vcsim, "restored-full") == "poweredOff"
    assert restore["warnings"] == [], restore["warnings"]
    # Defaults: the source VM's placement, from the hardware recorded with the point.
    assert placement(vcsim, "restored-full") == placement(vcsim, vcsim.vm)
    assert placement(vcsim, vcsim.vm)[0] == points.full["hardware"]["datastore"]
    source_unchanged(vcsim, points.changed)
    metrics = stack.metrics()
    assert metrics["allocated"] == 0 and metrics["qemu_nbd_processes"] == 0, metrics


def test_the_incremental_point_comes_back_through_its_chain_with_the_cli(vcsim, stack, points):
    r = stack.cli(
        "restore", "start", "--backup", points.incremental["id"], "--to", "restored-incr",
        "--hub", stack.hub_url, "--token-file", str(stack.node_token), "--wait",
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout, r.stderr, stack.logs())
    assert "status completed" in r.stdout
    listed = stack.cli(
        "restore", "list", "--backup", points.incremental["id"], "--json",
        "--hub", stack.hub_url, "--token-file", str(stack.node_token),
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    (restore,) = [x for x in json.loads(listed.stdout) if x["name"] == "restored-incr"]
    assert_restored(vcsim, stack, restore, points.incremental)
    # What the VM held after the change, read independently of the hub.
    for disk_id, (flat, capacity) in new_vm_disks(vcsim, "restored-incr").items():
        assert sha256_of_file(flat, capacity) == points.changed[disk_id], disk_id
    shown = stack.cli(
        "restore", "show", restore["id"],
        "--hub", stack.hub_url, "--token-file", str(stack.node_token),
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    for d in restore["disks"]:
        assert d["checksum"]["checksum"] in shown.stdout.replace("\n", "")


def test_a_name_that_exists_is_409_and_the_cli_exits_2_with_the_message(vcsim, stack, points):
    source_files = sorted(vm_dir(vcsim, vcsim.vm).iterdir())
    status, body = http_error(lambda: start_restore(stack, points.full["id"], vcsim.vm))
    assert (status, body["error"]) == (409, "vm_exists"), body
    assert vcsim.vm in body["message"]
    r = stack.cli(
        "restore", "start", "--backup", points.full["id"], "--to", vcsim.vm,
        "--hub", stack.hub_url, "--token-file", str(stack.node_token), "--wait",
    )  # fmt: skip
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.splitlines() == [f"sendense: refused: {body['message']} (HTTP 409 vm_exists)"]
    source_unchanged(vcsim, points.changed)
    assert sorted(vm_dir(vcsim, vcsim.vm).iterdir()) == source_files
    metrics = stack.metrics()
    assert metrics["allocated"] == 0 and metrics["qemu_nbd_processes"] == 0, metrics


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("datastore", "NoSuchDS", "unknown_datastore"),
        ("folder", "vm/no/such/folder", "unknown_folder"),
        ("resource_pool", "DC0_C0/Resources/nope", "unknown_resource_pool"),
    ],
)
def test_an_unknown_placement_is_422_naming_it_and_creates_nothing(
    vcsim, stack, points, field, value, code
):
    name = f"restored-{code}"
    status, body = http_error(
        lambda: start_restore(stack, points.full["id"], name, **{field: value})
    )
    assert (status, body["error"]) == (422, code), body
    assert value in body["message"]
    assert_nothing_of_restore_left(vcsim, stack, name)


def test_bad_bodies_are_422_and_create_nothing(vcsim, stack, points):
    path = f"/api/v1/backups/{points.full['id']}/restore"
    for body in ({}, {"name": ""}, {"name": "x" * 81}, {"name": "ok", "overwrite": True}):
        status, answer = http_error(lambda b=body: stack.api("POST", path, b))
        assert status == 422, (body, answer)
    assert_nothing_of_restore_left(vcsim, stack, "ok")


def test_an_unknown_backup_is_404(vcsim, stack):
    status, body = http_error(lambda: start_restore(stack, "no-such-backup", "restored-x"))
    assert (status, body["error"]) == (404, "backup_not_found"), body
    assert not vm_exists(vcsim, "restored-x")


def test_a_missing_chain_file_is_409_chain_broken_before_anything_is_created(vcsim, stack):
    base = backup(stack, vcsim.vm, "full")
    top = backup(stack, vcsim.vm, "incremental")
    assert top["parent"] == base["id"]
    gone = Path(base["disk_results"][0]["qcow2_path"])
    gone.unlink()
    status, body = http_error(lambda: start_restore(stack, top["id"], "restored-broken"))
    assert (status, body["error"]) == (409, "chain_broken"), body
    assert str(gone) in body["message"]
    assert_nothing_of_restore_left(vcsim, stack, "restored-broken")
    listed = stack.api("GET", f"/api/v1/restores?backup={top['id']}")
    assert (listed["restores"] if isinstance(listed, dict) else listed) == []


def test_a_damaged_chain_file_is_409_chain_broken(vcsim, stack):
    point = backup(stack, vcsim.vm, "full")
    damaged = Path(point["disk_results"][-1]["qcow2_path"])
    with damaged.open("r+b") as f:
        f.write(b"not a qcow2 header")
    status, body = http_error(lambda: start_restore(stack, point["id"], "restored-damaged"))
    assert (status, body["error"]) == (409, "chain_broken"), body
    assert str(damaged) in body["message"]
    assert_nothing_of_restore_left(vcsim, stack, "restored-damaged")


def test_a_failed_point_is_409_not_completed(vcsim, stack):
    # A hub stopped mid-backup fails the job ("hub restarted"): a real failed point.
    started = stack.api("POST", "/api/v1/backups", {"vm": vcsim.vm, "mode": "full"})
    stack.restart("hub", signal.SIGTERM)
    failed = wait_backup(stack, started["id"])
    assert failed["status"] == "failed", failed
    status, body = http_error(lambda: start_restore(stack, failed["id"], "restored-failed"))
    assert (status, body["error"]) == (409, "not_completed"), body
    assert_nothing_of_restore_left(vcsim, stack, "restored-failed")
