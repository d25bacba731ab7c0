"""What a new restore will hold: its hardware, one read-only export per disk, the node's body."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sendense_tools.hub.errors import NoChecksum
from sendense_tools.hub.job import Job
from sendense_tools.hub.plan import nbd_targets
from sendense_tools.hub.repository import Repository
from sendense_tools.hub.store import loads

DEFAULTS_WARNING = (
    "the point has no recorded hardware (backed up before it was recorded): "
    "1 CPU, 1024 MiB, guest otherGuest, bios, one lsilogic controller, no NIC"
)
# SCSI unit 7 is the controller's own.
SCSI_SELF = 7
DEFAULT_CONTROLLER = 1000


def default_hardware(vm: str, disks: list[dict[str, Any]]) -> dict[str, Any]:
    """The hardware of a point recorded without any: derived from its disks alone."""
    units = [u for u in range(len(disks) + 1) if u != SCSI_SELF][: len(disks)]
    return {
        "name": vm, "datacenter": None, "datastore": None, "folder": None,
        "resource_pool": None, "num_cpus": 1, "cores_per_socket": 1, "memory_mb": 1024,
        "guest_id": "otherGuest", "firmware": "bios", "version": None,
        "controllers": [
            {"key": DEFAULT_CONTROLLER, "type": "lsilogic", "bus": 0, "sharing": "noSharing"}
        ],
        "disks": [
            {"disk_id": d["disk_id"], "capacity": d["capacity"],
             "controller_key": DEFAULT_CONTROLLER, "unit": unit, "thin": True, "file": None}
            for d, unit in zip(disks, units, strict=True)
        ],
        "nics": [],
    }  # fmt: skip


def point_disks(backup_id: str, disks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The point's disks with their checksums; NoChecksum for a point that has none."""
    found = []
    for d in disks:
        checksum = loads(d["checksum"])
        if checksum is None:
            raise NoChecksum(backup_id, d["disk_id"])
        found.append({"disk_id": d["disk_id"], "capacity": d["capacity"], "checksum": checksum})
    return found


def restore_specs(
    job: Job, disks: list[dict[str, Any]], tops: dict[str, Path], slots: list[int]
) -> list[dict[str, Any]]:
    """Per disk: its slot, its export's name and the top image it serves."""
    return [
        d | {
            "nbd_port": slot,
            "export_name": Repository.export_name(job.vm, job.id, i),
            "qcow2_path": str(tops[d["disk_id"]]),
        }
        for i, (d, slot) in enumerate(zip(disks, slots, strict=True))
    ]  # fmt: skip


def restore_body(
    job: Job,
    target: dict[str, Any],
    hardware: dict[str, Any],
    host: str,
    specs: list[dict[str, Any]],
    psk: str | None,
) -> dict[str, Any]:
    """`POST node /api/v1/restore/start` (DESIGN contract, section 3)."""
    return {
        "job_id": job.id,
        **target,
        "hardware": hardware,
        "nbd_sources": nbd_targets(host, specs),
        "nbd_tls": {"username": job.tls_username, "psk": psk} if psk else None,
        "disks": [
            {"disk_id": s["disk_id"], "capacity": s["capacity"], "checksum": s["checksum"]}
            for s in specs
        ],
    }
