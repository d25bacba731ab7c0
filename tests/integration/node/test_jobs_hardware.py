"""Backup reports carry the VM's hardware as the backup's snapshot saw it."""

from __future__ import annotations

import sendense_tools.backup.executor as executor
from sendense_tools.vsphere.hardware import hardware_of
from sendense_tools.vsphere.inventory import find_vm
from sendense_tools.vsphere.params import VsphereError
from tests.integration.node.test_jobs_cbt import backed_up


def vm_hardware(vcsim) -> dict:
    session = vcsim.session()
    try:
        return hardware_of(session, find_vm(session, vcsim.vm))
    finally:
        session.close()


async def test_reports_after_the_snapshot_and_the_final_one_carry_the_hardware(
    vcsim, hub, make_node, qemu_nbd_target
):
    final, job = await backed_up(vcsim, hub, make_node, qemu_nbd_target, "h-full")
    assert final["status"] == "completed", final
    expected = vm_hardware(vcsim)
    assert final["hardware"] == job["hardware"] == expected
    assert [d["disk_id"] for d in expected["disks"]] == [d.disk_id for d in vcsim.disks]
    # Null until read, then in every report.
    reports = hub.reports["h-full"]
    first = next(i for i, r in enumerate(reports) if r["hardware"] is not None)
    assert all(r["hardware"] == expected for r in reports[first:])
    assert all(r["snapshot"] is not None for r in reports[first:])
    assert any(r["status"] == "running" for r in reports[first:])


async def test_hardware_that_cannot_be_read_mocked_fault_is_null_and_the_backup_completes(
    vcsim, hub, make_node, qemu_nbd_target, monkeypatch, caplog
):
    def unreadable(session, obj):
        raise VsphereError("snapshot-1 has no configuration")

    # A mocked fault: the simulator always answers the property read.
    monkeypatch.setattr(executor, "hardware_of", unreadable)
    final, _ = await backed_up(vcsim, hub, make_node, qemu_nbd_target, "h-none")
    assert final["status"] == "completed", final
    assert final["hardware"] is None
    assert all(r["hardware"] is None for r in hub.reports["h-none"])
    assert "hardware not recorded: snapshot-1 has no configuration" in caplog.text
