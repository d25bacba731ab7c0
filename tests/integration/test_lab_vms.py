"""`python -m sendense_tools.lab disks|destroy` (the demo's look at a restored VM, and its
removal before the next demo restores under the same name) against the lab simulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pyVmomi import vim

from sendense_tools.lab.seed import local_datastore_dir
from sendense_tools.vsphere.connection import VsphereError
from sendense_tools.vsphere.inventory import find_vm
from sendense_tools.vsphere.props import read_props, wait_task

ROOT = Path(__file__).resolve().parents[2]


def lab(vcsim, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sendense_tools.lab", *args, "--vcenter", vcsim.url,
         "--thumbprint", vcsim.thumbprint],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


def create_vm(vcsim, name: str) -> Path:
    """A VM with no disks beside the seeded one; its directory on the datastore."""
    session = vcsim.session()
    try:
        source = find_vm(session, vcsim.vm)
        props = read_props(session, source, ["parent", "resourcePool", "datastore"])
        spec = vim.vm.ConfigSpec(
            name=name,
            numCPUs=1,
            memoryMB=128,
            guestId="otherGuest",
            files=vim.vm.FileInfo(vmPathName="[LocalDS_0]"),
        )
        task = session.call(props["parent"].CreateVM_Task, spec, props["resourcePool"])
        wait_task(session, task, f"create {name}")
        return Path(local_datastore_dir(session, source, "LocalDS_0")) / name
    finally:
        session.close()


def test_disks_reads_each_attached_disk_from_the_datastore(vcsim):
    r = lab(vcsim, "disks", "--vm", vcsim.vm, "--json")
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    assert found["vm"] == vcsim.vm
    assert {d["disk_id"]: d["sha256"] for d in found["disks"]} == vcsim.sha256s
    assert [d["capacity"] for d in found["disks"]] == [d.capacity for d in vcsim.disks]


def test_destroy_removes_the_vm_and_its_files_and_a_second_one_is_a_no_op(vcsim):
    where = create_vm(vcsim, "lab-vm-to-destroy")
    assert where.is_dir()
    r = lab(vcsim, "destroy", "--vm", "lab-vm-to-destroy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "removed VM lab-vm-to-destroy"
    session = vcsim.session()
    try:
        try:
            find_vm(session, "lab-vm-to-destroy")
            raise AssertionError("the VM is still there")
        except VsphereError:
            pass
        find_vm(session, vcsim.vm)  # the other VM is untouched
    finally:
        session.close()
    assert not where.exists()
    again = lab(vcsim, "destroy", "--vm", "lab-vm-to-destroy")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "no VM lab-vm-to-destroy to remove"
