"""The node's domain errors reach HTTP through the one table in node/api.py."""

from __future__ import annotations

import pytest

from sendense_tools.node import errors
from sendense_tools.node.api import ERRORS, node_errors
from sendense_tools.node.forwards import TargetRefused
from sendense_tools.vsphere.inventory import VmNotFound


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (errors.BadTargets("nbd_targets: x"), 400, "bad_nbd_targets"),
        (errors.BadTls("nbd_tls: x"), 400, "bad_nbd_tls"),
        (errors.JobNotFound("job j does not exist"), 404, "job_not_found"),
        (VmNotFound("VM 'x' not found"), 404, "vm_not_found"),
        (errors.JobExists("job j already exists"), 409, "job_exists"),
        (errors.VmBusy("VM x is already being backed up"), 409, "vm_busy"),
        (TargetRefused("disk0:nbd://x: not a forward"), 422, "nbd_target_refused"),
        (errors.VcenterError("cannot reach vCenter"), 502, "vcenter_error"),
        (errors.SpoolError("cannot write /x: No space left on device"), 503, "spool_unavailable"),
    ],
)
def test_each_domain_error_has_its_status_and_code(exc, status, code):
    mapped = node_errors(exc)
    assert mapped is not None
    assert (mapped.status, mapped.code, mapped.message) == (status, code, str(exc))


def test_every_node_error_is_in_the_table():
    declared = {
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.NodeError)
        and cls is not errors.NodeError
    }
    assert declared <= set(ERRORS)


def test_anything_else_is_left_to_the_last_resort():
    assert node_errors(RuntimeError("bug")) is None
    assert node_errors(errors.NodeError("no status of its own")) is None
