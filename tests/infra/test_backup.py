"""A real backup of the lab's seeded VM through the hub, checked against the seed."""

from __future__ import annotations

import json

import pytest

from tests.infra.conftest import SENDENSE, VENV, hub_of, run_ok

SEED = "/run/vcsim-lab/seed.json"


@pytest.fixture(scope="module")
def seed(vcenters) -> dict:
    if not vcenters:
        pytest.skip("no lab vCenter: nothing seeded to compare with")
    return json.loads(vcenters[0].file(SEED).content_string)


def test_backup_of_seeded_vm_matches_seed(node, hubs, seed):
    record = json.loads(
        run_ok(
            node,
            SENDENSE,
            "backup",
            "start",
            "--vm",
            seed["vm"],
            "--mode",
            "full",
            "--wait",
            "--json",
        )
    )
    assert record["status"] == "completed", record.get("error")
    want = {d["disk_id"]: d["sha256"] for d in seed["disks"]}
    got = {d["disk_id"]: d["sha256"] for d in record["disk_results"]}
    assert got == want

    # The hub re-reads its qcow2 files and compares them with the record.
    verify = json.loads(run_ok(node, SENDENSE, "backup", "verify", record["id"], "--json"))
    assert verify["ok"], verify

    # And independently of the hub's code path: the guest content of each
    # qcow2 file, read on the hub, has the seeded SHA-256.
    hub = hub_of(node, hubs)
    code = (
        "import sys; from sendense_tools.nbd.digest import sha256_of_image; "
        "print(sha256_of_image(sys.argv[1]))"
    )
    for disk in record["disk_results"]:
        digest = run_ok(hub, f"{VENV}/bin/python", "-c", code, disk["qcow2_path"]).strip()
        assert digest == want[disk["disk_id"]], disk["qcow2_path"]
