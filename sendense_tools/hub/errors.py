"""The hub's domain errors: what went wrong with a backup or a restore, in words for a person.

The hub layers raise these; `hub/api.py` gives each its HTTP status in one table.
"""

from __future__ import annotations


class HubError(Exception):
    """A hub failure with a one-line message for a person."""


class BackupNotFound(HubError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"backup {job_id} does not exist")


class NotActive(HubError):
    def __init__(self, job_id: str, status: str, kind: str = "backup") -> None:
        super().__init__(f"{kind} {job_id} is {status}")


class Finishing(HubError):
    def __init__(self, job_id: str, kind: str = "backup") -> None:
        super().__init__(f"{kind} {job_id} is already finishing")


class NotFinished(HubError):
    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"backup {job_id} is still {status}")


class StartAborted(HubError):
    """The job ended (cancelled, node removed) while its exports were being started."""


class UnknownDisk(HubError):
    def __init__(self, job_id: str, disk_id: str, kind: str = "backup") -> None:
        super().__init__(f"{kind} {job_id} has no disk {disk_id!r}")


class NodeNotFound(HubError):
    def __init__(self, node: str) -> None:
        super().__init__(f"node {node!r} is not configured on this hub")


class UnknownPolicy(HubError):
    def __init__(self, node: str | None, policy: str) -> None:
        which = f"node {node!r}" if node is not None else "any node"
        super().__init__(f"policy {policy!r} is not configured for {which} on this hub")


class VmBusy(HubError):
    def __init__(self, vm: str, active: str | None) -> None:
        which = f" (backup {active})" if active else ""
        super().__init__(f"VM {vm!r} is already being backed up{which}")


class VmNotFound(HubError):
    pass


class NoDisks(HubError):
    def __init__(self, vm: str) -> None:
        super().__init__(f"VM {vm!r} has no disks to back up")


class NodeError(HubError):
    """The node answered, but not something the hub can use."""


class NodeUnreachable(HubError):
    """No answer from the node: whether it acted on the call is unknown."""


class NodeRefused(HubError):
    """The node answered the start with an error: it did not start the backup."""

    def __init__(
        self, node: str, status: int, code: str, message: str, kind: str = "backup"
    ) -> None:
        super().__init__(f"node {node} refused the {kind}: {message}")
        self.status = status
        self.code = code


class JobUnknownToNode(HubError):
    def __init__(self, node: str, job_id: str, kind: str = "backup") -> None:
        super().__init__(f"node {node} does not know {kind} {job_id} (node restarted?)")


class NoParent(HubError):
    """`mode: incremental` asked for, but no previous point can carry one."""

    def __init__(self, vm: str, reason: str) -> None:
        super().__init__(f"no incremental backup of VM {vm!r} possible: {reason}")
        self.reason = reason


class RestoreNotFound(HubError):
    def __init__(self, restore_id: str) -> None:
        super().__init__(f"restore {restore_id} does not exist")


class NotCompleted(HubError):
    def __init__(self, backup_id: str, status: str) -> None:
        super().__init__(f"backup {backup_id} is {status}: only a completed point restores")


class NoChecksum(HubError):
    """A point recorded before checksums: a restore of it could never be verified."""

    def __init__(self, backup_id: str, disk_id: str) -> None:
        super().__init__(
            f"backup {backup_id} has no checksum for {disk_id}: its restore cannot be verified"
        )


class NameBusy(HubError):
    def __init__(self, name: str, restore_id: str) -> None:
        super().__init__(f"a VM named {name!r} is already being restored (restore {restore_id})")


class NoHardware(HubError):
    """A point without recorded hardware that the defaults cannot hold either."""

    def __init__(self, backup_id: str, reason: str) -> None:
        super().__init__(f"backup {backup_id} has no recorded hardware and {reason}")


class ChainBroken(HubError):
    """A file of a point's chain is missing, damaged, or not the chain the records name."""


class PruneRunning(HubError):
    def __init__(self, what: str) -> None:
        super().__init__(f"a prune is already running ({what})")
