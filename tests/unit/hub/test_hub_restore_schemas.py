"""The restore request, the node's restore reports and the recorded hardware as models."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sendense_tools.hub.restore_schemas import RestoreReport, RestoreRequest
from sendense_tools.hub.schemas import Hardware, ProgressReport

HARDWARE = {
    "name": "lab-vm", "datacenter": "DC0", "datastore": "LocalDS_0", "folder": "vm",
    "resource_pool": "DC0_C0/Resources", "num_cpus": 2, "cores_per_socket": 1,
    "memory_mb": 1024, "guest_id": "otherGuest", "firmware": "bios", "version": None,
    "controllers": [{"key": 1000, "type": "lsilogic", "bus": 0, "sharing": "noSharing"}],
    "disks": [{"disk_id": "disk0", "capacity": 1 << 30, "controller_key": 1000, "unit": 0,
               "thin": True, "file": "[LocalDS_0] lab-vm/lab-vm.vmdk"}],
    "nics": [{"type": "e1000", "network": "VM Network", "connected": True}],
}  # fmt: skip


def test_a_request_needs_a_name_and_defaults_to_the_source_vms_places_powered_off():
    assert RestoreRequest.model_validate({"name": "new"}).model_dump() == {
        "name": "new", "datastore": None, "folder": None, "resource_pool": None,
        "power_on": False,
    }  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "x" * 81},
        {"name": "a", "extra": 1},
        {"name": "a", "datastore": ""},
    ],
)
def test_bad_requests_are_refused(body):
    with pytest.raises(ValidationError):
        RestoreRequest.model_validate(body)


def test_the_contracts_hardware_round_trips():
    assert Hardware.model_validate(HARDWARE).model_dump() == HARDWARE


def test_hardware_refuses_unknown_top_keys_but_ignores_a_newer_nodes_device_keys():
    with pytest.raises(ValidationError, match="surprise"):
        Hardware.model_validate({**HARDWARE, "surprise": True})
    nic = {**HARDWARE["nics"][0], "mac": "00:50:56:00:00:01"}
    assert Hardware.model_validate({**HARDWARE, "nics": [nic]}).nics[0].type == "e1000"


def test_hardware_lists_are_bounded_and_controller_types_known():
    with pytest.raises(ValidationError):
        Hardware.model_validate({**HARDWARE, "nics": HARDWARE["nics"] * 257})
    with pytest.raises(ValidationError):
        Hardware.model_validate({**HARDWARE, "controllers": [{"key": 1, "type": "ahci", "bus": 0}]})


def test_a_backup_report_may_carry_hardware_or_not():
    assert ProgressReport.model_validate({"status": "running"}).hardware is None
    report = ProgressReport.model_validate({"status": "running", "hardware": HARDWARE})
    assert report.model_dump()["hardware"] == HARDWARE


def test_a_restore_report_takes_the_contracts_statuses_and_phases_only():
    report = RestoreReport.model_validate(
        {"status": "running", "phase": "writing",
         "disks": [{"disk_id": "disk0", "bytes_written": 1, "bytes_total": 2}]}
    )  # fmt: skip
    assert report.disks[0].checksum is None and report.warnings == []
    for bad in ({"status": "paused"}, {"status": "running", "phase": "dreaming"},
                {"status": "running", "surprise": 1}):  # fmt: skip
        with pytest.raises(ValidationError):
            RestoreReport.model_validate(bad)
