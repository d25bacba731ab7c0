"""StartRequest: mode and changed_since, in the hub's string form and the richer one."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sendense_tools.backup.mode import PreviousDisk
from sendense_tools.node.schemas import StartRequest

BASE = {"job_id": "j1", "vm": "vm", "nbd_targets": "disk0:nbd://127.0.0.1:10100/x"}


def test_without_the_new_fields_it_is_an_auto_with_no_previous_point():
    req = StartRequest(**BASE)
    assert (req.mode, req.previous()) == ("auto", None)


def test_change_ids_as_strings_or_objects_become_previous_disks():
    rich = {"change_id": "52 cc-dd/4", "capacity": 1024, "key": 2001}
    req = StartRequest(
        **BASE, mode="incremental", changed_since={"disk0": "52 aa-bb/3", "disk1": rich}
    )
    assert req.previous() == {
        "disk0": PreviousDisk("52 aa-bb/3"),
        "disk1": PreviousDisk("52 cc-dd/4", 1024, 2001),
    }


@pytest.mark.parametrize(
    "extra",
    [
        {"mode": "sometimes"},
        {"changed_since": {"disk": "52 aa/1"}},
        {"changed_since": {"disk0": ""}},
        {"changed_since": {"disk0": "x" * 256}},
        {"changed_since": {"disk0": {"change_id": "52 aa/1", "capacity": -1}}},
        {"changed_since": {"disk0": {"change_id": "52 aa/1", "size": 1}}},
    ],
)
def test_malformed_mode_or_changed_since_is_refused(extra):
    with pytest.raises(ValidationError):
        StartRequest(**BASE, **extra)
