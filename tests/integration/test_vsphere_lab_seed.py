"""`python -m sendense_tools.lab seed` (the lab's seeding command) against the simulator."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from pyVmomi import vim

from sendense_tools.lab.pattern import content_sha256
from sendense_tools.vsphere.datastore import resolve_disk_url
from sendense_tools.vsphere.inventory import describe_vm, find_vm
from sendense_tools.vsphere.props import read_props
from sendense_tools.vsphere.snapshots import create_snapshot, remove_snapshot, snapshot_disks

ROOT = Path(__file__).resolve().parents[2]


def read_sha256(session, info, disk) -> str:
    cookie = session.session_cookie()
    ctx = session.trust.context
    url = resolve_disk_url(session.trust, info.datacenter, disk.file, cookie)
    h = hashlib.sha256()
    with urllib.request.urlopen(
        urllib.request.Request(url, headers={"Cookie": cookie}), context=ctx
    ) as r:
        while chunk := r.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.parametrize("upload", [False, True], ids=["local-datastore", "put-folder"])
def test_seed_command_gives_the_vm_disks_with_the_printed_sha256(vcsim, upload):
    args = [
        sys.executable, "-m", "sendense_tools.lab", "seed", "--vcenter", vcsim.url,
        "--vm", vcsim.vm, "--disks", "8M,4M", "--insecure", "--seed", "lab", "--json",
    ]  # fmt: skip
    if upload:
        args.append("--upload")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)["disks"]
    assert [d["capacity"] for d in printed] == [8 << 20, 4 << 20]
    session = vcsim.session()
    try:
        info = describe_vm(session, vcsim.vm)
        assert [d.disk_id for d in info.disks] == ["disk0", "disk1"]
        for disk, p in zip(info.disks, printed, strict=True):
            assert read_sha256(session, info, disk) == p["sha256"]
    finally:
        session.close()
    # Reproducible: the same seed gives the same content.
    assert printed[0]["sha256"] == content_sha256(8 << 20, f"lab:{vcsim.vm}:disk0")


def test_seed_command_rejects_bad_sizes(vcsim):
    proc = subprocess.run(
        [sys.executable, "-m", "sendense_tools.lab", "seed", "--vcenter", vcsim.url,
         "--vm", vcsim.vm, "--disks", "8Q", "--insecure"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "8Q" in proc.stderr


def _run_seed(vcsim, disks: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sendense_tools.lab", "seed", "--vcenter", vcsim.url,
         "--vm", vcsim.vm, "--disks", disks, "--thumbprint", vcsim.thumbprint, "--seed", "wide",
         "--json"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip


def test_seed_past_15_disks_adds_a_controller_and_one_snapshot_holds_them_all(vcsim):
    proc = _run_seed(vcsim, ",".join(["1M"] * 25 + ["2M"]))
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)["disks"]
    session = vcsim.session()
    try:
        vm = find_vm(session, vcsim.vm)
        devices = read_props(session, vm, ["config.hardware.device"])["config.hardware.device"]
        ctls = {d.key: d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)}
        disks = [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
        assert sorted(c.busNumber for c in ctls.values()) == [0, 1]
        places = [(ctls[d.controllerKey].busNumber, d.unitNumber) for d in disks]
        assert len(set(places)) == 26 and all(unit != 7 for _, unit in places), places
        info = describe_vm(session, vcsim.vm)
        assert [d.disk_id for d in info.disks] == [f"disk{n}" for n in range(26)]
        assert read_sha256(session, info, info.disks[25]) == printed[25]["sha256"]
        # A backup's ONE snapshot: it records every disk of both controllers.
        snap = create_snapshot(session, vm, "wide-probe")
        try:
            frozen = snapshot_disks(session, snap)
            assert [(d.disk_id, d.capacity) for d in frozen] == [
                (d.disk_id, d.capacity) for d in info.disks
            ]
        finally:
            remove_snapshot(session, snap)
    finally:
        session.close()


def test_seed_of_more_disks_than_four_controllers_hold_is_refused_and_changes_nothing(vcsim):
    assert _run_seed(vcsim, "1M,1M").returncode == 0
    proc = _run_seed(vcsim, ",".join(["1M"] * 61))
    assert proc.returncode == 1
    assert "61 disks do not fit: at most 60" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    session = vcsim.session()
    try:
        assert len(describe_vm(session, vcsim.vm).disks) == 2
    finally:
        session.close()
