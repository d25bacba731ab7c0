"""`python -m sendense_tools.lab change` (the demo's change between a full and an
incremental) against the lab simulator: the disks change as printed, and the
simulator's change tracking reports those writes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from pyVmomi import vim

from sendense_tools.lab.change import scattered_writes
from sendense_tools.vsphere.inventory import find_vm
from sendense_tools.vsphere.props import read_props, wait_task
from sendense_tools.vsphere.snapshots import create_snapshot, remove_snapshot
from tests.integration.test_vcsim_cbt import flat_path, query_all, snapshot_disks

ROOT = Path(__file__).resolve().parents[2]


def sha256_of(path: str, capacity: int) -> str:
    data = Path(path).read_bytes()
    return hashlib.sha256(data + bytes(capacity - len(data))).hexdigest()


def test_change_writes_the_printed_content_and_cbt_reports_exactly_those_writes(vcsim):
    session = vcsim.session()
    try:
        vm = find_vm(session, vcsim.vm)
        task = session.call(vm.ReconfigVM_Task, vim.vm.ConfigSpec(changeTrackingEnabled=True))
        wait_task(session, task, "enable CBT")
        before = create_snapshot(session, vm, "before-change")
        ids = {k: d.backing.changeId for k, d in snapshot_disks(session, before.obj).items()}
        remove_snapshot(session, before)
        disks = sorted(snapshot_disks(session, vm).items())
        old = {k: sha256_of(flat_path(session, vm, d), d.capacityInBytes) for k, d in disks}

        proc = subprocess.run(
            [sys.executable, "-m", "sendense_tools.lab", "change", "--vcenter", vcsim.url,
             "--vm", vcsim.vm, "--insecure", "--json"],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        printed = json.loads(proc.stdout)["disks"]
        assert len(printed) == len(disks)

        after = create_snapshot(session, vm, "after-change")
        try:
            for (key, disk), p in zip(disks, printed, strict=True):
                capacity = disk.capacityInBytes
                writes = scattered_writes(capacity, f"change:{vcsim.vm}:{p['disk_id']}")
                assert p["changed_bytes"] == sum(len(d) for _, d in writes)
                assert p["sha256"] == sha256_of(flat_path(session, vm, disk), capacity)
                assert p["sha256"] != old[key]
                areas, _ = query_all(vm, after, key, ids[key], capacity)
                changed = {(o // 65536, (o + len(d) - 1) // 65536) for o, d in writes}
                grains = {g for lo, hi in changed for g in range(lo, hi + 1)}
                got = {g for s, n in areas for g in range(s // 65536, (s + n - 1) // 65536 + 1)}
                assert got == grains
        finally:
            remove_snapshot(session, after)
        assert read_props(session, vm, ["snapshot"]).get("snapshot") is None
    finally:
        session.close()
