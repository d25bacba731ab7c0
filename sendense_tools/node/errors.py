"""The node's domain errors; node/api.py maps each one to an HTTP status in one table."""

from __future__ import annotations

from sendense_tools.errors import SendenseError


class NodeError(SendenseError):
    """A request the node cannot carry out; the message is one line for a person."""


class JobExists(NodeError):
    pass


class JobNotFound(NodeError):
    pass


class VmBusy(NodeError):
    """Another backup of the same VM is running on this node."""


class BadTargets(NodeError):
    """nbd_targets that do not parse or do not match the VM's disks."""


class BadTls(NodeError):
    """nbd_tls that cannot be used."""


class VcenterError(NodeError):
    """vCenter could not answer (login, network, a fault)."""


class SpoolError(NodeError):
    """The spool directory cannot hold a job record (full disk, permissions)."""


class RestoreBusy(NodeError):
    """Another restore on this node is creating a VM of the same name."""


class BadRestore(NodeError):
    """A restore request whose disks, sources and hardware do not agree."""
