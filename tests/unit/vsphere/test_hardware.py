"""default_hardware: what a restore point recorded before hardware existed comes back as."""

from __future__ import annotations

import pytest

from sendense_tools.vsphere.connection import VsphereError
from sendense_tools.vsphere.hardware import default_hardware


def disks(n: int) -> list[dict]:
    return [{"disk_id": f"disk{i}", "capacity": (i + 1) << 20} for i in range(n)]


def test_the_contract_defaults_and_no_location():
    hw = default_hardware(disks(2), name="web01")
    assert (hw["num_cpus"], hw["cores_per_socket"], hw["memory_mb"]) == (1, 1, 1024)
    assert (hw["guest_id"], hw["firmware"], hw["version"], hw["nics"]) == (
        "otherGuest", "bios", None, []
    )  # fmt: skip
    assert [hw[k] for k in ("datacenter", "datastore", "folder", "resource_pool")] == [None] * 4
    assert hw["name"] == "web01"
    assert hw["controllers"] == [
        {"key": 1000, "type": "lsilogic", "bus": 0, "sharing": "noSharing"}
    ]
    assert [(d["disk_id"], d["capacity"], d["controller_key"], d["unit"]) for d in hw["disks"]] == [
        ("disk0", 1 << 20, 1000, 0),
        ("disk1", 2 << 20, 1000, 1),
    ]


def test_units_skip_the_controllers_own_and_a_full_bus_opens_the_next():
    hw = default_hardware(disks(16))
    placed = [(d["controller_key"], d["unit"]) for d in hw["disks"]]
    assert placed[:8] == [(1000, u) for u in (0, 1, 2, 3, 4, 5, 6, 8)]
    assert placed[14:] == [(1000, 15), (1001, 0)]
    assert [(c["key"], c["bus"]) for c in hw["controllers"]] == [(1000, 0), (1001, 1)]
    assert len(set(placed)) == 16


def test_no_disks_still_has_a_controller_and_too_many_are_refused():
    assert len(default_hardware([])["controllers"]) == 1
    assert len(default_hardware(disks(60))["controllers"]) == 4
    with pytest.raises(VsphereError, match="61 disks exceed the 60"):
        default_hardware(disks(61))
