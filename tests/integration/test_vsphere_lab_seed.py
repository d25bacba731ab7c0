"""`python -m sendense_tools.lab seed` (the lab's seeding command) against the simulator."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from sendense_tools.lab.pattern import content_sha256
from sendense_tools.vsphere.datastore import resolve_disk_url
from sendense_tools.vsphere.inventory import describe_vm

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
