"""Restore records, their disks and their slots in the hub database (a Store mixin).

A restore's slots are rows of the backups' `allocations` table (job_id = the
restore id), so the allocator's state, reconciliation and `GET /api/v1/nbd/ports`
see them as they see a backup's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from sendense_tools.hub.sql import ACTIVE, dump, loads, now

Statements = list[tuple[str, tuple]]


class RestoreRows:
    # Store's: its connection, and its one-transaction runner.
    _db: sqlite3.Connection
    _tx: Callable[[Statements], None]

    # -- writes ---------------------------------------------------------------

    def create_restore(self, restore: dict[str, Any], disks: list[dict[str, Any]]) -> None:
        """The restore, its disks and their slots (`nbd_port` of each disk), in one go."""
        stmts: Statements = [
            (
                "INSERT INTO restores (id, backup_id, node, vm, name, status, datastore, folder,"
                " resource_pool, power_on, created_at, warnings, chain) VALUES (?, ?, ?, ?, ?,"
                " 'pending', ?, ?, ?, ?, ?, ?, ?)",
                (restore["id"], restore["backup_id"], restore["node"], restore["vm"],
                 restore["name"], restore["datastore"], restore["folder"],
                 restore["resource_pool"], int(restore["power_on"]), now(),
                 dump(restore["warnings"]), dump(restore["chain"])),
            )
        ]  # fmt: skip
        for i, d in enumerate(disks):
            stmts.append(
                (
                    "INSERT INTO restore_disks (restore_id, idx, disk_id, capacity, bytes_total,"
                    " expected_checksum) VALUES (?, ?, ?, ?, ?, ?)",
                    (restore["id"], i, d["disk_id"], d["capacity"], d["capacity"],
                     dump(d["checksum"])),
                )
            )  # fmt: skip
            stmts.append(
                (
                    "INSERT INTO allocations (node, port, job_id, disk_id) VALUES (?, ?, ?, ?)",
                    (restore["node"], d["nbd_port"], restore["id"], d["disk_id"]),
                )
            )
        self._tx(stmts)

    def restore_progress(self, restore_id: str, report: dict[str, Any]) -> None:
        """A node report's phase, new VM, warnings and per-disk numbers, at once."""
        stmts: Statements = [
            (
                "UPDATE restores SET phase = ?, moref = COALESCE(?, moref), node_warnings = ?"
                " WHERE id = ?",
                (report.get("phase"), report.get("moref"), dump(report["warnings"]), restore_id),
            )
        ]
        for d in report["disks"]:
            stmts.append(
                (
                    "UPDATE restore_disks SET bytes_written = ?, bytes_total = ?,"
                    " checksum = COALESCE(?, checksum) WHERE restore_id = ? AND disk_id = ?",
                    (d["bytes_written"], d["bytes_total"], dump(d.get("checksum")),
                     restore_id, d["disk_id"]),
                )
            )  # fmt: skip
        self._tx(stmts)

    def set_verified(self, restore_id: str, verified: dict[str, bool]) -> None:
        """The hub's own comparison of each disk's read-back checksum with the point's."""
        self._tx(
            [
                (
                    "UPDATE restore_disks SET verified = ? WHERE restore_id = ? AND disk_id = ?",
                    (int(ok), restore_id, disk_id),
                )
                for disk_id, ok in verified.items()
            ]
        )

    def end_restore(self, restore_id: str, status: str, error: str | None = None) -> None:
        self._tx(
            [
                (
                    "UPDATE restores SET status = ?, error = COALESCE(?, error), finished_at = ?,"
                    " phase = CASE WHEN ? IN ('pending', 'running') THEN phase END WHERE id = ?",
                    (status, error, None if status in ACTIVE else now(), status, restore_id),
                )
            ]
        )

    # -- reads ----------------------------------------------------------------

    def restore_disks(self, restore_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT * FROM restore_disks WHERE restore_id = ? ORDER BY idx", (restore_id,)
        )
        return [dict(r) for r in rows]

    def restore_row(self, restore_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM restores WHERE id = ?", (restore_id,)).fetchone()
        return dict(row) if row else None

    def restore(self, restore_id: str) -> dict[str, Any] | None:
        """The public restore record (DESIGN contract, section 2)."""
        row = self.restore_row(restore_id)
        return _public(row, self.restore_disks(restore_id)) if row else None

    def restores(
        self,
        node: str | None = None,
        status: str | None = None,
        backup: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        where, args = [], []
        for column, value in (("node", node), ("status", status), ("backup_id", backup)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT * FROM restores"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        rows = [dict(r) for r in self._db.execute(sql, (*args, limit))]
        return [_public(r, self.restore_disks(r["id"])) for r in rows]

    def active_restores(self) -> list[str]:
        rows = self._db.execute(
            "SELECT id FROM restores WHERE status IN (?, ?) ORDER BY created_at", ACTIVE
        )
        return [r["id"] for r in rows]

    def active_restore_named(self, node: str, name: str) -> str | None:
        row = self._db.execute(
            "SELECT id FROM restores WHERE node = ? AND name = ? AND status IN (?, ?)",
            (node, name, *ACTIVE),
        ).fetchone()
        return row["id"] if row else None

    def points_in_use(self) -> set[str]:
        """The backups a running restore reads (the point and everything it builds on):
        none of them may be pruned or merged until it ends."""
        return set(self.point_readers())

    def point_readers(self) -> dict[str, str]:
        """Each point a running restore reads -> that restore's id (the oldest's)."""
        rows = self._db.execute(
            "SELECT id, chain FROM restores WHERE status IN (?, ?) ORDER BY created_at DESC",
            ACTIVE,
        )
        return {backup_id: r["id"] for r in rows for backup_id in loads(r["chain"])}


def _public(row: dict[str, Any], disks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "backup_id": row["backup_id"],
        "node": row["node"],
        "vm": row["vm"],
        "name": row["name"],
        "status": row["status"],
        "phase": row["phase"],
        "datastore": row["datastore"],
        "folder": row["folder"],
        "resource_pool": row["resource_pool"],
        "power_on": bool(row["power_on"]),
        "moref": row["moref"],
        "created_at": row["created_at"],
        "finished_at": row["finished_at"],
        "error": row["error"],
        "warnings": loads(row["warnings"]) + loads(row["node_warnings"]),
        "disks": [
            {
                "disk_id": d["disk_id"],
                "capacity": d["capacity"],
                "bytes_written": d["bytes_written"],
                "bytes_total": d["bytes_total"],
                "expected_checksum": loads(d["expected_checksum"]),
                "checksum": loads(d["checksum"]),
                "verified": None if d["verified"] is None else bool(d["verified"]),
            }
            for d in disks
        ],
    }
