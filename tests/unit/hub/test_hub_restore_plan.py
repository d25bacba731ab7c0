"""A restore's plan: default hardware for a point without any, its exports, the node's body."""

from __future__ import annotations

from pathlib import Path

import pytest

from sendense_tools.api.hardware import Hardware
from sendense_tools.hub.errors import NoChecksum, NoHardware
from sendense_tools.hub.job import Job
from sendense_tools.hub.options import ExportOptions
from sendense_tools.hub.restore_plan import (
    DEFAULTS_WARNING,
    hardware_for,
    point_disks,
    restore_body,
    restore_specs,
)

CHECKSUM = {"algorithm": "blake2b", "block_size": 4 << 20, "checksum": "ab" * 32}


def disks(n: int) -> list[dict]:
    return [{"disk_id": f"disk{i}", "capacity": (i + 1) << 20, "checksum": CHECKSUM}
            for i in range(n)]  # fmt: skip


def test_a_point_without_hardware_gets_the_contracts_defaults_and_a_warning():
    hw, warnings = hardware_for({"id": "b1", "vm": "web01", "hardware": None}, disks(9))
    Hardware.model_validate(hw)
    assert (hw["name"], hw["num_cpus"], hw["memory_mb"], hw["guest_id"], hw["firmware"]) == (
        "web01", 1, 1024, "otherGuest", "bios",
    )  # fmt: skip
    assert {c["type"] for c in hw["controllers"]} == {"lsilogic"} and hw["nics"] == []
    # Unit 7 is the SCSI controller's own.
    assert [d["unit"] for d in hw["disks"]] == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    assert [d["capacity"] for d in hw["disks"]] == [d["capacity"] for d in disks(9)]
    assert warnings == [DEFAULTS_WARNING]


def test_recorded_hardware_is_used_as_is_and_too_many_disks_for_defaults_refused():
    recorded = {"name": "web01", "num_cpus": 4}
    assert hardware_for({"id": "b1", "vm": "web01", "hardware": recorded}, disks(1)) == (
        recorded, [],
    )  # fmt: skip
    with pytest.raises(NoHardware, match=r"^backup b1 has no recorded hardware and 100 disks"):
        hardware_for({"id": "b1", "vm": "web01", "hardware": None}, disks(100))


def test_a_point_without_checksums_cannot_be_restored():
    rows = [{"disk_id": "disk0", "capacity": 1, "checksum": None}]
    with pytest.raises(NoChecksum, match=r"^backup b1 has no checksum for disk0:"):
        point_disks("b1", rows)


def test_the_node_is_told_where_each_disk_is_exported_and_what_it_must_hash_to():
    job = Job(id="r-12345678-aaaa", node="n1", vm="web01", client=None, kind="restore")  # type: ignore[arg-type]
    job.tls_username = "sendense-12345678"
    specs = restore_specs(job, disks(2), {"disk0": Path("/r/a"), "disk1": Path("/r/b")},
                          [10100, 10101])  # fmt: skip
    target = {"name": "new", "datastore": "ds", "folder": None, "resource_pool": None,
              "power_on": False}  # fmt: skip
    body = restore_body(job, target, {"hw": 1}, "127.0.0.1", specs, "feed")
    assert body == {
        "job_id": "r-12345678-aaaa", **target, "hardware": {"hw": 1},
        "nbd_sources": "disk0:nbd://127.0.0.1:10100/web01-r-123456-disk0,"
                       "disk1:nbd://127.0.0.1:10101/web01-r-123456-disk1",
        "nbd_tls": {"username": "sendense-12345678", "psk": "feed"},
        "disks": [{"disk_id": d["disk_id"], "capacity": d["capacity"], "checksum": CHECKSUM}
                  for d in disks(2)],
    }  # fmt: skip
    assert [s["qcow2_path"] for s in specs] == ["/r/a", "/r/b"]


def test_a_read_only_export_has_no_write_options():
    args = ExportOptions(read_only=True).qemu_args()
    assert args[0] == "-r"
    assert not [a for a in args if a.startswith(("--discard", "--detect-zeroes"))]
    assert "-r" not in ExportOptions().qemu_args()
