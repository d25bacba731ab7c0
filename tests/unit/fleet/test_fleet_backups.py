"""A node's backup record judged against its VM's seed."""

from __future__ import annotations

from tests.fleet.backups import judge
from tests.fleet.inventory import Plan

NODE = Plan(2).members[1]  # sds-node-02, DC0_C0_RP0_VM1, two disks
DISKS = [{"disk_id": "disk0", "sha256": "aa"}, {"disk_id": "disk1", "sha256": "bb"}]
SEED = {
    "vm": NODE.vm,
    "disks": DISKS,
}


def record(**changes):
    base = {
        "status": "completed",
        "node": NODE.id,
        "vm": NODE.vm,
        "disk_results": [
            {"disk_id": "disk0", "sha256": "aa"},
            {"disk_id": "disk1", "sha256": "bb"},
        ],
    }
    return base | changes


def test_a_completed_backup_equal_to_its_seed_passes():
    assert judge(NODE, record(), SEED) == ""


def test_a_failed_backup_says_why():
    assert judge(NODE, record(status="failed", error="slot pool exhausted"), SEED) == (
        "failed: slot pool exhausted"
    )


def test_another_nodes_or_vms_record_fails():
    assert "node sds-node-01" in judge(NODE, record(node="sds-node-01"), SEED)
    assert "VM DC0_C0_RP0_VM0" in judge(NODE, record(vm="DC0_C0_RP0_VM0"), SEED)


def test_a_disk_unlike_the_seed_or_missing_is_named():
    wrong = record(
        disk_results=[{"disk_id": "disk0", "sha256": "aa"}, {"disk_id": "disk1", "sha256": "cc"}]
    )
    assert judge(NODE, wrong, SEED) == "disks disk1 differ from the seed"
    short = record(disk_results=DISKS[:1])
    assert judge(NODE, short, SEED) == "disks disk1 differ from the seed"
