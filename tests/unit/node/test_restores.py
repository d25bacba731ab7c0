"""node/restores.py plan_of: a start request's disks, sources and hardware must agree."""

from __future__ import annotations

import pytest

from sendense_tools.nbd.endpoint import parse_nbd_targets
from sendense_tools.node.errors import BadRestore
from sendense_tools.node.restore_schemas import RestoreStartRequest
from sendense_tools.node.restores import plan_of

SUM = {"algorithm": "blake2b", "block_size": 4194304, "checksum": "ab" * 32}


def request(**over) -> dict:
    hardware = {
        "name": "src", "datacenter": "DC0", "datastore": "LocalDS_0", "folder": "vm",
        "resource_pool": "DC0_C0/Resources", "num_cpus": 2, "cores_per_socket": 1,
        "memory_mb": 2048, "guest_id": "otherGuest", "firmware": "bios", "version": None,
        "controllers": [{"key": 1000, "type": "pvscsi", "bus": 0, "sharing": "noSharing"}],
        "disks": [
            {"disk_id": "disk0", "capacity": 1 << 20, "controller_key": 1000, "unit": 0,
             "thin": True, "file": "[LocalDS_0] src/src.vmdk"},
            {"disk_id": "disk1", "capacity": 2 << 20, "controller_key": 1000, "unit": 1,
             "thin": True, "file": "[LocalDS_0] src/src_1.vmdk"},
        ],
        "nics": [{"type": "vmxnet3", "network": "VM Network", "connected": True}],
    }  # fmt: skip
    body = {
        "job_id": "r-1", "name": "new", "hardware": hardware,
        "nbd_sources": "disk0:nbd://127.0.0.1:10100/a,disk1:nbd://127.0.0.1:10101/b",
        "disks": [{"disk_id": "disk0", "capacity": 1 << 20, "checksum": SUM},
                  {"disk_id": "disk1", "capacity": 2 << 20, "checksum": SUM}],
    }  # fmt: skip
    body.update(over)
    return body


def plan(body: dict):
    model = RestoreStartRequest.model_validate(body)
    return plan_of(model, parse_nbd_targets(model.nbd_sources))


def test_a_consistent_request_is_the_executors_plan():
    p = plan(request(folder="vm/restores", power_on=True))
    assert [d.disk_id for d in p.disks] == ["disk0", "disk1"]
    assert p.disks[1].capacity == 2 << 20 and p.disks[1].checksum == SUM
    assert p.sources["disk1"].uri == "nbd://127.0.0.1:10101/b"
    assert (p.name, p.folder, p.datastore, p.power_on) == ("new", "vm/restores", None, True)
    assert p.hardware["controllers"][0]["type"] == "pvscsi"


def test_sources_that_miss_a_disk_are_refused():
    with pytest.raises(BadRestore, match="nbd_sources name disk0, disks name disk0, disk1"):
        plan(request(nbd_sources="disk0:nbd://127.0.0.1:10100/a"))


def test_a_disk_given_twice_is_refused():
    body = request()
    body["disks"][1]["disk_id"] = "disk0"
    with pytest.raises(BadRestore, match="given twice"):
        plan(body)


def test_a_capacity_other_than_the_hardwares_is_refused():
    body = request()
    body["disks"][0]["capacity"] = 4 << 20
    with pytest.raises(BadRestore, match="disk0: capacity 4194304, the hardware has 1048576"):
        plan(body)


def test_a_disk_on_a_controller_the_hardware_lacks_is_refused():
    body = request()
    body["hardware"]["disks"][1]["controller_key"] = 1001
    with pytest.raises(BadRestore, match="disk1: controller 1001 is not in the hardware"):
        plan(body)


def test_unknown_top_level_hardware_keys_are_refused():
    body = request()
    body["hardware"]["surprise"] = 1
    with pytest.raises(ValueError, match="surprise"):
        plan(body)
