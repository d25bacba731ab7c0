"""Two nodes each back up a VM of 101 disks at the same time on the role-deployed
hub: 202 qemu-nbd at once (each node has its own 101 slots), all bit-identical.

The fleet scenario's simulator has spare VMs; this seeds two of them with 101
tiny disks each (tests/infra/wide_seed.py, run on the lab vCenter).
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.infra.conftest import SENDENSE, VENV, read_toml, run_ok
from tests.infra.test_fleet import Fleet
from tests.infra.test_fleet import fleet as fleet_fixture  # noqa: F401 (used by name)

DISKS = 101
DISK_SIZE = "1M"
# Spare simulator VMs (the first two are the seeded ones of the other suites).
WIDE_VMS = ("DC0_C0_RP0_VM2", "DC0_C0_RP0_VM3")
WIDE_SEED = (Path(__file__).with_name("wide_seed.py")).read_text()
# The most qemu-nbd processes seen at once, rewritten to argv[1] until argv[2] s.
PEAK_COUNTER = """
import os, sys, time
out, end, peak = sys.argv[1], time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < end:
    n = 0
    for pid in os.listdir("/proc"):
        try:
            n += pid.isdigit() and open(f"/proc/{pid}/comm").read().strip() == "qemu-nbd"
        except OSError:
            pass
    if n > peak:
        peak = n
        with open(out + ".tmp", "w") as f:
            f.write(str(peak))
        os.replace(out + ".tmp", out)
    time.sleep(0.1)
"""


@pytest.fixture(scope="module")
def wide(request: pytest.FixtureRequest, vcenters) -> tuple[Fleet, list[dict]]:
    """The fleet, and the seed records of the two wide VMs (A's, then B's)."""
    fleet: Fleet = request.getfixturevalue("fleet_fixture")
    if not vcenters:
        pytest.skip("no lab vCenter to seed wide VMs on")
    vcenter = vcenters[0]
    a = fleet.first_two[0]
    thumbprint = read_toml(a.host, "/etc/sendense/node.toml")["vcenter"].get("thumbprint", "")
    names = run_ok(
        vcenter, f"{VENV}/bin/python", "-c",
        "import json, sys; from sendense_tools.lab.cli import connect; "
        "from sendense_tools.vsphere.inventory import find_vm\n"
        "s = connect(sys.argv[1], 'user', 'pass', None, thumbprint=sys.argv[2])\n"
        "ok = []\n"
        "for n in sys.argv[3:]:\n"
        "    try:\n        find_vm(s, n); ok.append(n)\n    except Exception:\n        pass\n"
        "print(json.dumps(ok))",
        "https://127.0.0.1/sdk", thumbprint, *WIDE_VMS,
    )  # fmt: skip
    if json.loads(names) != list(WIDE_VMS):
        pytest.skip(f"the simulator lacks the spare VMs {WIDE_VMS}")
    return fleet, [_seed_wide(vcenter, thumbprint, vm) for vm in WIDE_VMS]


def _seed_wide(vcenter, thumbprint: str, vm: str) -> dict:
    argv = ["https://127.0.0.1/sdk", thumbprint, vm, str(DISKS), DISK_SIZE]
    return json.loads(run_ok(vcenter, f"{VENV}/bin/python", "-c", WIDE_SEED, *argv))


def test_two_nodes_101_disks_each_at_once(wide):
    fleet, seeds = wide
    pair = fleet.first_two
    tag = uuid.uuid4().hex[:8]
    peak_file, peak_unit = f"/run/sendense-fleet-peak-{tag}", f"sendense-fleet-peak-{tag}"
    run_ok(
        fleet.hub, "systemd-run", f"--unit={peak_unit}", "--collect", "--quiet",
        "/usr/bin/python3", "-c", PEAK_COUNTER, peak_file, "900",
    )  # fmt: skip
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(
                run_ok,
                m.host,
                SENDENSE,
                "backup",
                "start",
                "--vm",
                s["vm"],
                "--mode",
                "full",
                "--wait",
                "--json",
            )
            for m, s in zip(pair, seeds, strict=True)
        ]
        records = [json.loads(r.result()) for r in runs]
    seconds = time.monotonic() - started
    fleet.hub.run(f"systemctl stop {peak_unit}")
    counted = fleet.hub.file(peak_file)
    peak = int(counted.content_string) if counted.exists else 0
    fleet.hub.run(f"rm -f {peak_file}")
    print(f"2 x {DISKS} disks in {seconds:.1f} s, at most {peak} qemu-nbd at once on the hub")
    code = (
        "import sys; from sendense_tools.nbd.digest import sha256_of_image; "
        "print(' '.join(sha256_of_image(p) for p in sys.argv[1:]))"
    )
    for m, seed, record in zip(pair, seeds, records, strict=True):
        assert record["status"] == "completed", (m.id, record.get("error"))
        want = {d["disk_id"]: d["sha256"] for d in seed["disks"]}
        got = {d["disk_id"]: d["sha256"] for d in record["disk_results"]}
        assert len(got) == DISKS and got == want, m.id
        slots = sorted(d["nbd_port"] for d in record["disk_results"])
        first, last = fleet.slot_range
        assert slots == list(range(first, last + 1)), f"{m.id} did not get its own full pool"
        paths = [d["qcow2_path"] for d in record["disk_results"]]
        digests = run_ok(fleet.hub, f"{VENV}/bin/python", "-c", code, *paths).split()
        assert digests == [want[d["disk_id"]] for d in record["disk_results"]], m.id
    assert peak >= 2 * DISKS, f"only {peak} qemu-nbd ran at once: the two backups did not overlap"
