"""backup_vm (the executor) against the vCenter simulator: snapshot rules of the https transport."""

from __future__ import annotations

import pytest

from sendense_tools.backup.executor import BackupOptions, Hooks, backup_vm
from sendense_tools.backup.sources import SourceError
from sendense_tools.nbd.endpoint import NbdEndpoint
from sendense_tools.vsphere.inventory import find_vm
from sendense_tools.vsphere.snapshots import create_snapshot, list_snapshots, remove_snapshot
from tests.fixtures.vcsim import remaining_snapshots


async def test_a_snapshot_taken_while_ours_is_made_refuses_https_and_leaves_only_it(
    vcsim, qemu_nbd_target
):
    made = {d.disk_id: qemu_nbd_target(d.capacity, export=d.disk_id) for d in vcsim.disks}
    targets = {disk_id: NbdEndpoint(t.uri) for disk_id, t in made.items()}
    other = vcsim.session()
    vm = find_vm(other, vcsim.vm)

    def someone_else_snapshots(_ours: str) -> None:
        # Runs right after our snapshot exists: past the check made before creating it.
        create_snapshot(other, vm, "taken-meanwhile")

    try:
        with pytest.raises(SourceError, match=r"already has snapshot\(s\) 'taken-meanwhile'"):
            await backup_vm(
                vcsim.params(), vcsim.vm, targets, "t-race", BackupOptions(transport="https"),
                Hooks(on_snapshot=someone_else_snapshots),
            )  # fmt: skip
        assert remaining_snapshots(vcsim) == ["taken-meanwhile"]
    finally:
        for snap in list_snapshots(other, vm):
            remove_snapshot(other, snap)
        other.close()
    assert remaining_snapshots(vcsim) == []


async def test_a_failing_snapshot_hook_still_removes_our_snapshot(vcsim, qemu_nbd_target):
    made = {d.disk_id: qemu_nbd_target(d.capacity, export=d.disk_id) for d in vcsim.disks}
    targets = {disk_id: NbdEndpoint(t.uri) for disk_id, t in made.items()}

    def reporter_breaks(_ours: str) -> None:
        raise RuntimeError("progress reporter broke")

    with pytest.raises(RuntimeError, match="progress reporter broke"):
        await backup_vm(
            vcsim.params(), vcsim.vm, targets, "t-hook", BackupOptions(transport="https"),
            Hooks(on_snapshot=reporter_breaks),
        )  # fmt: skip
    assert remaining_snapshots(vcsim) == []
