"""What a new job will hold: one spec per disk (slot, export, image), its targets, its PSK."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from sendense_tools.hub.images import StorageError
from sendense_tools.hub.job import Job
from sendense_tools.hub.nbdtls import write_tls_dir
from sendense_tools.hub.repository import Repository


def disk_specs(repo: Repository, job: Job, disks: list[dict], slots: list[int]) -> list[dict]:
    return [
        {
            "disk_id": disk["disk_id"],
            "capacity": disk["capacity"],
            "nbd_port": slot,
            "export_name": repo.export_name(job.vm, job.id, i),
            "qcow2_path": str(repo.disk_path(job.vm, job.id, i)),
        }
        for i, (disk, slot) in enumerate(zip(disks, slots, strict=True))
    ]


def nbd_targets(host: str, specs: list[dict[str, Any]]) -> str:
    """The seed's form: the host and port are the node's forward of each slot."""
    return ",".join(
        f"{s['disk_id']}:nbd://{host}:{s['nbd_port']}/{s['export_name']}" for s in specs
    )


def job_row(job: Job, host: str, specs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": job.id,
        "vm": job.vm,
        "node": job.node,
        "nbd_targets": nbd_targets(host, specs),
        "tls_username": job.tls_username,
        "key_dir": str(job.key_dir) if job.key_dir else None,
        # With a parent the node decides the mode after its snapshot; without, a full.
        "mode": None if job.plan.parent else "full",
        "mode_reason": job.plan.reason,
        "parent": job.plan.parent.job_id if job.plan.parent else None,
        "policy": job.policy,
    }


def start_body(job: Job, vm: str, nbd_targets: str, psk: str | None) -> dict[str, Any]:
    """`POST node /api/v1/backup/start`. Without a parent every node makes a full whatever
    the mode, so `mode` and `change_ids` go only with one: a node older than
    incrementals still takes a full (and refuses an incremental by name)."""
    body: dict[str, Any] = {
        "job_id": job.id,
        "vm": vm,
        "nbd_targets": nbd_targets,
        "nbd_tls": {"username": job.tls_username, "psk": psk} if psk else None,
    }
    parent = job.plan.parent
    if parent is not None:
        body |= {"mode": job.mode, "change_ids": dict(parent.change_ids)}
    return body


def write_psk(key_root: Path, job: Job) -> str:
    assert job.key_dir is not None and job.tls_username is not None
    psk = secrets.token_hex(32)
    try:
        key_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_tls_dir(job.key_dir, job.tls_username, psk)
    except OSError as exc:
        where = Path(exc.filename) if exc.filename else job.key_dir
        raise StorageError(where, exc.errno or 0, exc.strerror or str(exc)) from None
    return psk
