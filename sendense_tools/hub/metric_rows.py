"""What /metrics reads from the hub database (a read-only Store mixin): one pass per
table, so a scrape of a hub with thousands of points stays a handful of queries."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, get_args

from sendense_tools.hub.schemas import Status

# Every status a backup or restore record can hold: each is reported, 0 included, so a
# rate or an alert on one does not wait for its first job.
JOB_STATUSES: tuple[str, ...] = get_args(Status)
# Only a finished run is counted: a running row's status changes, a counter's labels must not.
PRUNE_ENDINGS = ("completed", "failed")


@dataclass(frozen=True)
class PruneTotals:
    runs: dict[tuple[str, bool], int]  # (status, dry run) -> finished runs
    points_removed: int
    merged_bytes: int
    last_finished_at: str | None


class MetricRows:
    # Store's connection.
    _db: sqlite3.Connection

    def completed_disks(self, node: str | None = None) -> list[dict[str, Any]]:
        """Each disk of every completed point (of one node, or all): node, vm, id,
        finished_at, policy, qcow2_path; each VM's points oldest first."""
        sql = (
            "SELECT j.node, j.vm, j.id, j.finished_at, j.policy, d.qcow2_path FROM jobs j"
            " LEFT JOIN disks d ON d.job_id = j.id WHERE j.status = 'completed'"
        )
        args: tuple = ()
        if node is not None:
            sql, args = sql + " AND j.node = ?", (node,)
        rows = self._db.execute(sql + " ORDER BY j.node, j.vm, j.created_at, j.rowid, d.idx", args)
        return [dict(r) for r in rows]

    def job_counts(self, node: str | None = None) -> dict[tuple[str, str], int]:
        """(kind "backup" | "restore", status) -> records, every status present."""
        where, args = ("", ()) if node is None else (" WHERE node = ?", (node,))
        rows = self._db.execute(
            f"SELECT 'backup' AS kind, status, COUNT(*) AS n FROM jobs{where} GROUP BY status"
            f" UNION ALL SELECT 'restore', status, COUNT(*) FROM restores{where} GROUP BY status",
            args * 2,
        )
        counts = {(kind, s): 0 for kind in ("backup", "restore") for s in JOB_STATUSES}
        counts.update({(r["kind"], r["status"]): r["n"] for r in rows})
        return counts

    def prune_totals(self) -> PruneTotals:
        runs = {(s, dry): 0 for s in PRUNE_ENDINGS for dry in (False, True)}
        for r in self._db.execute(
            "SELECT status, dry_run, COUNT(*) AS n FROM prune_runs WHERE status IN (?, ?)"
            " GROUP BY status, dry_run",
            PRUNE_ENDINGS,
        ):
            runs[(r["status"], bool(r["dry_run"]))] = r["n"]
        # A dry run removes nothing, whatever it says it would; a failed run keeps what it did.
        totals = self._db.execute(
            "SELECT COALESCE(SUM(points_removed), 0) AS points, COALESCE(SUM(merged_bytes), 0)"
            " AS bytes FROM prune_runs WHERE dry_run = 0"
        ).fetchone()
        last = self._db.execute(
            "SELECT MAX(finished_at) AS at FROM prune_runs WHERE status IN (?, ?)", PRUNE_ENDINGS
        ).fetchone()
        return PruneTotals(runs, totals["points"], totals["bytes"], last["at"])
