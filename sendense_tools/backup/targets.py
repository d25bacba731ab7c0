"""NBD targets against the VM's disks: one to one, or an error naming the disk."""

from __future__ import annotations

from sendense_tools.errors import SendenseError
from sendense_tools.nbd.endpoint import NbdEndpoint
from sendense_tools.vsphere.inventory import DiskInfo


class BackupError(SendenseError):
    """The backup failed; the message names the disk or step."""


class TargetMismatch(BackupError):
    """The NBD targets do not match the VM's disks one to one (bad input)."""


def match_targets(disks: list[DiskInfo], targets: dict[str, NbdEndpoint]) -> None:
    """Every disk needs a target and every target a disk; name the first mismatch."""
    ids = [d.disk_id for d in disks]
    missing = [i for i in ids if i not in targets]
    extra = [t for t in targets if t not in ids]
    if missing:
        raise TargetMismatch(
            f"no NBD target for {missing[0]} of the VM (its disks: {', '.join(ids) or 'none'})"
        )
    if extra:
        raise TargetMismatch(
            f"NBD target {extra[0]} names no disk of the VM (its disks: {', '.join(ids)})"
        )
