"""Backup records, disk results and slot allocations in SQLite.

Calls are short and made from the event loop thread only, so one connection
serializes them; each change is one transaction, so a crash leaves either the
old or the new state (the allocations table is what reconciliation trusts).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sendense_tools.hub.metric_rows import MetricRows
from sendense_tools.hub.prune_store import PruneRows
from sendense_tools.hub.restore_store import RestoreRows
from sendense_tools.hub.schema import migrate
from sendense_tools.hub.sql import ACTIVE, dump, loads, now

# A running job whose node's final report was taken: a restart verifies it again.
FINALIZING = "finalizing"
# A job the hub stopped under its node: the next start settles it with the node.
STOPPED = "stopped"


__all__ = ["ACTIVE", "FINALIZING", "Store", "loads"]


class Store(RestoreRows, MetricRows, PruneRows):
    def __init__(self, path: str | Path) -> None:
        db = Path(path)
        db.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        migrate(self._db)

    def close(self) -> None:
        self._db.close()

    def _tx(self, statements: list[tuple[str, tuple]]) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for sql, args in statements:
                self._db.execute(sql, args)

    # -- writes ---------------------------------------------------------------

    def create_job(self, job: dict[str, Any], disks: list[dict[str, Any]]) -> None:
        """The job, its disks and their slot allocations, all in one transaction."""
        stmts: list[tuple[str, tuple]] = [
            (
                "INSERT INTO jobs (id, vm, node, status, created_at, nbd_targets, tls_username,"
                " key_dir, mode, mode_reason, parent, policy) VALUES (?, ?, ?, 'pending', ?, ?, ?,"
                " ?, ?, ?, ?, ?)",
                (job["id"], job["vm"], job["node"], now(), job["nbd_targets"],
                 job.get("tls_username"), job.get("key_dir"), job.get("mode"),
                 job.get("mode_reason"), job.get("parent"), job.get("policy")),
            )
        ]  # fmt: skip
        for i, d in enumerate(disks):
            stmts.append(
                (
                    "INSERT INTO disks (job_id, idx, disk_id, capacity, nbd_port, export_name,"
                    " qcow2_path, bytes_total) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (job["id"], i, d["disk_id"], d["capacity"], d["nbd_port"],
                     d["export_name"], d["qcow2_path"], d["capacity"]),
                )
            )  # fmt: skip
            stmts.append(
                (
                    "INSERT INTO allocations (node, port, job_id, disk_id) VALUES (?, ?, ?, ?)",
                    (job["node"], d["nbd_port"], job["id"], d["disk_id"]),
                )
            )
        self._tx(stmts)

    def set_pid(self, node: str, slot: int, pid: int) -> None:
        self._tx(
            [("UPDATE allocations SET pid = ? WHERE node = ? AND port = ?", (pid, node, slot))]
        )

    def set_status(self, job_id: str, status: str, error: str | None = None) -> None:
        """A final status ends the job's phase too."""
        finished = None if status in ACTIVE else now()
        self._tx(
            [
                (
                    "UPDATE jobs SET status = ?, error = COALESCE(?, error), finished_at = ?,"
                    " phase = CASE WHEN ? IS NULL THEN phase END WHERE id = ?",
                    (status, error, finished, finished, job_id),
                )
            ]
        )

    def set_phase(self, job_id: str, phase: str) -> None:
        self._tx([("UPDATE jobs SET phase = ? WHERE id = ?", (phase, job_id))])

    def record_progress(
        self,
        job_id: str,
        snapshot: str | None,
        disks: list[dict[str, Any]],
        phase: str | None = None,
        mode: tuple[str, str | None] | None = None,
        hardware: dict[str, Any] | None = None,
    ) -> None:
        """A report's numbers (and, for the final one, the job's new phase) at once;
        `mode`: the node's (mode, reason) once it decided; `hardware`: the VM's, once known."""
        stmts: list[tuple[str, tuple]] = []
        if hardware is not None:
            stmts.append(("UPDATE jobs SET hardware = ? WHERE id = ?", (dump(hardware), job_id)))
        if phase is not None:
            stmts.append(("UPDATE jobs SET phase = ? WHERE id = ?", (phase, job_id)))
        if snapshot is not None:
            stmts.append(("UPDATE jobs SET snapshot = ? WHERE id = ?", (snapshot, job_id)))
        if mode is not None:
            # The node decides only for a job the hub gave a parent; without one the
            # hub's full and its reason stand.
            stmts.append(
                (
                    "UPDATE jobs SET mode = ?, mode_reason = ? WHERE id = ? AND parent IS NOT NULL",
                    (*mode, job_id),
                )
            )
        for d in disks:
            stmts.append(
                (
                    "UPDATE disks SET bytes_copied = ?, bytes_total = ?,"
                    " sha256 = COALESCE(?, sha256), change_id = COALESCE(?, change_id),"
                    " checksum = COALESCE(?, checksum), changes = COALESCE(?, changes),"
                    " areas = COALESCE(?, areas) WHERE job_id = ? AND disk_id = ?",
                    (d["bytes_copied"], d["bytes_total"], d.get("sha256"), d.get("change_id"),
                     dump(d.get("checksum")), dump(d.get("changes")), dump(d.get("areas")),
                     job_id, d["disk_id"]),
                )
            )  # fmt: skip
        self._tx(stmts)

    def set_checksum(self, job_id: str, disk_id: str, checksum: dict[str, Any]) -> None:
        """The hub's own whole-disk checksum of a point's disk (derived or computed)."""
        self._tx(
            [
                (
                    "UPDATE disks SET checksum = ? WHERE job_id = ? AND disk_id = ?",
                    (dump(checksum), job_id, disk_id),
                )
            ]
        )

    def set_mode(self, job_id: str, mode: str, reason: str | None) -> None:
        self._tx(
            [("UPDATE jobs SET mode = ?, mode_reason = ? WHERE id = ?", (mode, reason, job_id))]
        )

    def set_parent(self, job_id: str, parent: str | None) -> None:
        self._tx([("UPDATE jobs SET parent = ? WHERE id = ?", (parent, job_id))])

    def set_image_sha(self, job_id: str, disk_id: str, sha: str) -> None:
        self._tx(
            [
                (
                    "UPDATE disks SET sha256_qcow2 = ? WHERE job_id = ? AND disk_id = ?",
                    (sha, job_id, disk_id),
                )
            ]
        )

    def release_allocations(self, job_id: str) -> None:
        self._tx([("DELETE FROM allocations WHERE job_id = ?", (job_id,))])

    def release_slot(self, node: str, slot: int) -> None:
        self._tx([("DELETE FROM allocations WHERE node = ? AND port = ?", (node, slot))])

    # -- reads ----------------------------------------------------------------

    def allocations(self, node: str | None = None) -> list[dict[str, Any]]:
        """Held slots (of one node, or all), by node then slot."""
        sql = "SELECT node, port, job_id, disk_id, pid FROM allocations"
        args: tuple = ()
        if node is not None:
            sql, args = sql + " WHERE node = ?", (node,)
        rows = self._db.execute(sql + " ORDER BY node, port", args)
        return [dict(r) for r in rows]

    def active_jobs(self) -> list[str]:
        rows = self._db.execute(
            "SELECT id FROM jobs WHERE status IN (?, ?) ORDER BY created_at", ACTIVE
        )
        return [r["id"] for r in rows]

    def finalizing(self, job_id: str) -> bool:
        return self.phase(job_id) == FINALIZING

    def phase(self, job_id: str) -> str | None:
        row = self._db.execute("SELECT phase FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row["phase"] if row is not None else None

    def active_job_for_vm(self, node: str, vm: str) -> str | None:
        row = self._db.execute(
            "SELECT id FROM jobs WHERE node = ? AND vm = ? AND status IN (?, ?)",
            (node, vm, *ACTIVE),
        ).fetchone()
        return row["id"] if row else None

    def job_row(self, job_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return dict(row) if row else None

    def disks(self, job_id: str) -> list[dict[str, Any]]:
        """A job's disk rows; `checksum`, `changes` and `areas` hold JSON text."""
        rows = self._db.execute("SELECT * FROM disks WHERE job_id = ? ORDER BY idx", (job_id,))
        return [dict(r) for r in rows]

    def newest_completed(self, node: str, vm: str) -> dict[str, Any] | None:
        """The newest completed point of a VM on a node (an incremental's parent candidate)."""
        row = self._db.execute(
            "SELECT * FROM jobs WHERE node = ? AND vm = ? AND status = 'completed'"
            " ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (node, vm),
        ).fetchone()
        return dict(row) if row else None

    def chain(self, job_id: str) -> list[dict[str, Any]]:
        """The public records of a point's chain: its full first, the point itself last."""
        chain: list[dict[str, Any]] = []
        seen: set[str] = set()
        current: str | None = job_id
        while current is not None and current not in seen:
            record = self.record(current)
            if record is None:
                break
            seen.add(current)
            chain.append(record)
            current = record["parent"]
        return chain[::-1]

    def record(self, job_id: str) -> dict[str, Any] | None:
        """The public backup record (DESIGN.md fields)."""
        job = self.job_row(job_id)
        if job is None:
            return None
        return _public(job, self.disks(job_id))

    def records(
        self,
        node: str | None = None,
        status: str | None = None,
        vm: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        where, args = [], []
        for column, value in (("node", node), ("status", status), ("vm", vm)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        jobs = [dict(r) for r in self._db.execute(sql, (*args, limit))]
        return [_public(j, self.disks(j["id"])) for j in jobs]


def _public(job: dict[str, Any], disks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": job["id"],
        "vm": job["vm"],
        "node": job["node"],
        "status": job["status"],
        "created_at": job["created_at"],
        "finished_at": job["finished_at"],
        "error": job["error"],
        "snapshot": job["snapshot"],
        "mode": job["mode"],
        "mode_reason": job["mode_reason"],
        "parent": job["parent"],
        "policy": job["policy"],
        "nbd_targets_string": job["nbd_targets"],
        "hardware": loads(job["hardware"]),
        "disk_results": [
            {
                "disk_id": d["disk_id"],
                "capacity": d["capacity"],
                "nbd_port": d["nbd_port"],
                "export_name": d["export_name"],
                "qcow2_path": d["qcow2_path"],
                "bytes_copied": d["bytes_copied"],
                "bytes_total": d["bytes_total"],
                "sha256": d["sha256"],
                "sha256_qcow2": d["sha256_qcow2"],
                "change_id": d["change_id"],
                "checksum": loads(d["checksum"]),
            }
            for d in disks
        ],
    }
