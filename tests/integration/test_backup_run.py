"""`sendense backup run` against the vCenter simulator and real qemu-nbd targets."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sendense_tools.nbd.digest import sha256_of_nbd
from sendense_tools.vsphere.hardware import hardware_of
from sendense_tools.vsphere.inventory import find_vm
from sendense_tools.vsphere.snapshots import create_snapshot, remove_snapshot
from tests.fixtures.ports import free_port
from tests.fixtures.vcsim import remaining_snapshots
from tests.integration.test_vcsim_cbt import flat_path, set_cbt, snapshot_disks

ROOT = Path(__file__).resolve().parents[2]


def sendense(*args: str) -> list[str]:
    return [sys.executable, "-m", "sendense_tools", *args]


def run_args(vcsim, targets: str, *extra: str) -> list[str]:
    return sendense(
        "backup", "run", "--vcenter", vcsim.url, "--vm", vcsim.vm, "--nbd-targets", targets,
        "--user", vcsim.user, "--password-file", str(vcsim.password_file()),
        "--thumbprint", vcsim.thumbprint, *extra,
    )  # fmt: skip


def run(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def make_targets(vcsim, qemu_nbd_target) -> tuple[str, list]:
    made = [qemu_nbd_target(d.capacity, shared=4, export=d.disk_id) for d in vcsim.disks]
    text = ",".join(f"{d.disk_id}:{t.uri}" for d, t in zip(vcsim.disks, made, strict=True))
    return text, made


def test_https_backup_lands_seeded_content_from_one_snapshot(
    vcsim, qemu_nbd_target, snapshot_watch
):
    text, made = make_targets(vcsim, qemu_nbd_target)
    proc = run(run_args(vcsim, text, "--job-id", "t-https", "--json"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {d["disk_id"]: d["checksum"] for d in result["disks"]} == vcsim.checksums
    for d, target in zip(vcsim.disks, made, strict=True):
        assert sha256_of_nbd(target.uri) == d.sha256
    assert result["snapshot"] == "sendense-t-https"
    session = vcsim.session()
    try:
        # As the snapshot saw it, which is the VM as it still is.
        assert result["hardware"] == hardware_of(session, find_vm(session, vcsim.vm))
    finally:
        session.close()
    assert snapshot_watch.seen == ["sendense-t-https"]
    assert remaining_snapshots(vcsim) == []


def test_file_transport_reads_the_datastore_directly(vcsim, qemu_nbd_target):
    text, made = make_targets(vcsim, qemu_nbd_target)
    ds_root = next((vcsim.workdir / "tmp").glob("govcsim-*LocalDS_0*"))
    proc = run(run_args(vcsim, text, "--transport", "file", "--file-root", str(ds_root), "--json"))
    assert proc.returncode == 0, proc.stderr
    for d, target in zip(vcsim.disks, made, strict=True):
        assert sha256_of_nbd(target.uri) == d.sha256
    assert remaining_snapshots(vcsim) == []


def test_copy_failure_on_one_disk_fails_the_run_and_removes_the_snapshot(
    vcsim, qemu_nbd_target, snapshot_watch
):
    text, _ = make_targets(vcsim, qemu_nbd_target)
    closed = free_port()  # nothing listens here
    parts = text.split(",")
    parts[1] = f"disk1:nbd://127.0.0.1:{closed}/disk1"
    proc = run(run_args(vcsim, ",".join(parts), "--job-id", "t-fail", "--retry-for", "1"))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("sendense: error: disk1")
    assert snapshot_watch.seen == ["sendense-t-fail"]
    assert remaining_snapshots(vcsim) == []


def test_leftover_snapshot_of_an_earlier_run_is_removed_at_start(vcsim, qemu_nbd_target):
    session = vcsim.session()
    try:
        create_snapshot(session, find_vm(session, vcsim.vm), "sendense-crashed-run")
    finally:
        session.close()
    text, _ = make_targets(vcsim, qemu_nbd_target)
    proc = run(run_args(vcsim, text, "--json"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["leftovers_removed"] == ["sendense-crashed-run"]
    assert remaining_snapshots(vcsim) == []


def test_https_refuses_a_vm_that_already_has_snapshots_and_leaves_only_them(
    vcsim, qemu_nbd_target, snapshot_watch
):
    session = vcsim.session()
    vm = find_vm(session, vcsim.vm)
    theirs = [create_snapshot(session, vm, n) for n in ("before-upgrade", "other-tool")]
    try:
        text, made = make_targets(vcsim, qemu_nbd_target)
        proc = run(run_args(vcsim, text, "--job-id", "t-stale"))
        assert proc.returncode == 1, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"sendense: error: VM {vcsim.vm} already has snapshot(s) ")
        assert "'before-upgrade'" in lines[0] and "'other-tool'" in lines[0]
        assert "vddk" in lines[0]
        assert sorted(remaining_snapshots(vcsim)) == ["before-upgrade", "other-tool"]
        assert "sendense-t-stale" not in snapshot_watch.seen
        # nothing was written to the targets: they still read as zeroes
        assert all(sha256_of_nbd(t.uri) != d.sha256 for d, t in zip(vcsim.disks, made, strict=True))
    finally:
        for snap in reversed(theirs):
            remove_snapshot(session, snap)
        session.close()
    assert remaining_snapshots(vcsim) == []


def test_sigterm_mid_copy_removes_the_snapshot(vcsim, slow_nbd_target, snapshot_watch):
    targets = ",".join(f"{d.disk_id}:{slow_nbd_target(d.capacity).uri}" for d in vcsim.disks)
    proc = subprocess.Popen(
        run_args(vcsim, targets, "--job-id", "t-term"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert snapshot_watch.wait_for(lambda w: "sendense-t-term" in w.present, 120)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert "interrupted" in err.strip().splitlines()[-1]
    assert remaining_snapshots(vcsim) == []


def test_unknown_vm_is_a_failure_with_one_line(vcsim, qemu_nbd_target):
    args = run_args(vcsim, "disk0:nbd://127.0.0.1:1/x")
    args[args.index("--vm") + 1] = "no-such-vm"
    proc = run(args)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "sendense: error: VM 'no-such-vm' not found in vCenter"


@pytest.mark.parametrize(
    ("targets", "named"),
    [
        ("disk0:nbd://127.0.0.1:1/a,disk1", "disk1"),
        ("disk0:http://127.0.0.1:1/a", "http://127.0.0.1:1/a"),
        ("disk0:nbd://127.0.0.1:99999/a", "nbd://127.0.0.1:99999/a"),
    ],
)
def test_malformed_targets_are_bad_usage_naming_the_part(vcsim, snapshot_watch, targets, named):
    proc = run(run_args(vcsim, targets))
    assert proc.returncode == 2
    assert named in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert snapshot_watch.seen == []


def test_targets_that_miss_a_disk_are_bad_usage_naming_it(vcsim, snapshot_watch):
    proc = run(run_args(vcsim, "disk0:nbd://127.0.0.1:1/a,disk1:nbd://127.0.0.1:2/b"))
    assert proc.returncode == 2
    assert "no NBD target for disk2" in proc.stderr
    assert snapshot_watch.seen == []


def test_insecure_and_thumbprint_exclude_each_other(vcsim):
    proc = run(run_args(vcsim, "disk0:nbd://127.0.0.1:1/a", "--insecure"))
    assert proc.returncode == 2
    assert "exclude each other" in proc.stderr


def test_insecure_backup_says_it_verifies_nothing(vcsim, qemu_nbd_target):
    text, _ = make_targets(vcsim, qemu_nbd_target)
    args = run_args(vcsim, text, "--json")
    i = args.index("--thumbprint")
    proc = run([*args[:i], *args[i + 2 :], "--insecure"])
    assert proc.returncode == 0, proc.stderr
    disks = json.loads(proc.stdout)["disks"]
    assert {d["disk_id"]: d["checksum"] for d in disks} == vcsim.checksums
    warning = [line for line in proc.stderr.splitlines() if "--insecure" in line]
    assert len(warning) == 1 and "NOT verified" in warning[0], proc.stderr


def test_password_file_must_be_private(vcsim, tmp_path):
    loose = tmp_path / "pw"
    loose.write_text("pass\n")
    os.chmod(loose, 0o644)
    args = run_args(vcsim, "disk0:nbd://127.0.0.1:1/a")
    args[args.index("--password-file") + 1] = str(loose)
    proc = run(args)
    assert proc.returncode == 1
    assert "0600" in proc.stderr


def test_changed_since_by_hand_copies_only_the_change_into_overlays(vcsim, chain):
    """Needs the copy engine's areas= (engineer "engine"): runs after the merge."""
    session = vcsim.session()
    vm = find_vm(session, vcsim.vm)
    try:
        set_cbt(session, vm, True)
        fulls = {d.disk_id: chain.create(f"{d.disk_id}.qcow2", d.capacity) for d in vcsim.disks}
        served = chain.serve_all(fulls)
        text = ",".join(f"{k}:{e.uri}" for k, e in served.items())
        first = run(run_args(vcsim, text, "--job-id", "t-cbt-full", "--json"))
        assert first.returncode == 0, first.stderr
        full = json.loads(first.stdout)
        chain.stop_all()
        assert full["mode"] == "full"
        ids = {d["disk_id"]: d["change_id"] for d in full["disks"]}
        assert all(ids.values())

        disk = vcsim.disks[1]
        rng = random.Random("by-hand")
        with open(flat_path(session, vm, snapshot_disks(session, vm)[disk.key]), "r+b") as f:
            os.pwrite(f.fileno(), rng.randbytes(4096), 3 << 20)
        overlays = {k: chain.create(f"{k}-2.qcow2", backing=p) for k, p in fulls.items()}
        text = ",".join(f"{k}:{e.uri}" for k, e in chain.serve_all(overlays).items())
        since = ",".join(f"{k}={v}" for k, v in ids.items())
        second = run(run_args(vcsim, text, "--job-id", "t-cbt-incr", "--json",
                              "--mode", "incremental", "--changed-since", since))  # fmt: skip
        assert second.returncode == 0, second.stderr
        incr = json.loads(second.stdout)
        chain.stop_all()
        assert (incr["mode"], incr["mode_reason"]) == ("incremental", None)
        by_id = {d["disk_id"]: d for d in incr["disks"]}
        assert by_id[disk.disk_id]["areas"] == [[3 << 20, 64 << 10]]
        assert by_id[disk.disk_id]["bytes_copied"] == 4096
        assert all(by_id[k]["areas"] == [] for k in by_id if k != disk.disk_id)
        assert all(d["change_id"] and d["change_id"] != ids[d["disk_id"]] for d in incr["disks"])
        with open(flat_path(session, vm, snapshot_disks(session, vm)[disk.key]), "rb") as f:
            now = f.read(disk.capacity)
        assert chain.read(overlays[disk.disk_id]) == now + bytes(disk.capacity - len(now))
    finally:
        session.close()
    assert remaining_snapshots(vcsim) == []


def test_changed_since_that_names_no_disk_pair_is_bad_usage(vcsim):
    proc = run(run_args(vcsim, "disk0:nbd://127.0.0.1:1/x", "--changed-since", "disk0"))
    assert proc.returncode == 2
    assert "'disk0' is not DISK=CHANGE_ID" in proc.stderr


def test_the_copies_stay_within_the_memory_budget_given(vcsim, qemu_nbd_target):
    text, _ = make_targets(vcsim, qemu_nbd_target)
    budget = 128 << 20
    proc = run(run_args(vcsim, text, "--memory-budget", str(budget), "--json"))
    assert proc.returncode == 0, proc.stderr
    buffers = json.loads(proc.stdout)["copy_buffers"]
    assert buffers["budget"] == budget
    assert 0 < buffers["peak"] <= budget
