"""Prune runs, the merge journal, and removing a pruned point's rows (a Store mixin).

A point leaves the database in one transaction: its disks, its job row and (for a
merge) its journal row go together with the child's new parent, so a crash leaves
either the chain before the merge or the chain after it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from sendense_tools.hub.sql import dump, loads, now

Statements = list[tuple[str, tuple]]


class PruneRows:
    # Store's: its connection, and its one-transaction runner.
    _db: sqlite3.Connection
    _tx: Callable[[Statements], None]

    # -- runs -----------------------------------------------------------------

    def start_prune_run(
        self, run_id: str, dry_run: bool, policy: str | None, node: str | None
    ) -> str:
        started = now()
        self._tx(
            [
                (
                    "INSERT INTO prune_runs (id, started_at, dry_run, policy, node, status)"
                    " VALUES (?, ?, ?, ?, ?, 'running')",
                    (run_id, started, int(dry_run), policy, node),
                )
            ]
        )
        return started

    def end_prune_run(
        self, run_id: str, status: str, removed: int, merged_bytes: int, error: str | None
    ) -> str:
        finished = now()
        self._tx(
            [
                (
                    "UPDATE prune_runs SET status = ?, finished_at = ?, points_removed = ?,"
                    " merged_bytes = ?, error = ? WHERE id = ?",
                    (status, finished, removed, merged_bytes, error, run_id),
                )
            ]
        )
        return finished

    def fail_running_prunes(self, reason: str) -> int:
        """At start: a run the last hub left `running` never finished."""
        with self._db:
            cur = self._db.execute(
                "UPDATE prune_runs SET status = 'failed', finished_at = ?, error = ?"
                " WHERE status = 'running'",
                (now(), reason),
            )
        return cur.rowcount

    def prune_run(self, run_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM prune_runs WHERE id = ?", (run_id,)).fetchone()
        return dict(row) if row else None

    # -- points ---------------------------------------------------------------

    def completed_points(self, node: str | None = None) -> list[dict[str, Any]]:
        """Completed job rows (of one node, or all), each VM's newest first."""
        sql = "SELECT * FROM jobs WHERE status = 'completed'"
        args: tuple = ()
        if node is not None:
            sql, args = sql + " AND node = ?", (node,)
        rows = self._db.execute(sql + " ORDER BY node, vm, created_at DESC, rowid DESC", args)
        return [dict(r) for r in rows]

    def delete_point(self, point: str, vm: str) -> None:
        """A point no other builds on: its rows go, its folder is to go (`removals`)."""
        self._tx(_drop(point, vm))

    def removals(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute("SELECT point, vm FROM removals")]

    def removed(self, point: str) -> None:
        """The point's folder is gone from disk too."""
        self._tx([("DELETE FROM removals WHERE point = ?", (point,))])

    # -- the merge journal ----------------------------------------------------

    def begin_merge(
        self, point: str, child: str, node: str, vm: str, disks: list[dict[str, Any]]
    ) -> None:
        self._tx(
            [
                (
                    "INSERT INTO merges (point, child, node, vm, disks, started_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (point, child, node, vm, dump(disks), now()),
                )
            ]
        )

    def finish_merge(self, point: str, child: str, new_parent: str | None, vm: str) -> None:
        """The child now holds the point's data: it builds on the point's parent, and the
        point's rows and journal row go, at once."""
        self._tx(
            [
                ("UPDATE jobs SET parent = ? WHERE id = ?", (new_parent, child)),
                ("DELETE FROM merges WHERE point = ?", (point,)),
                *_drop(point, vm),
            ]
        )

    def journaled_merges(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM merges ORDER BY started_at, rowid")
        return [dict(r) | {"disks": loads(r["disks"])} for r in rows]


def _drop(point: str, vm: str) -> Statements:
    return [
        ("DELETE FROM disks WHERE job_id = ?", (point,)),
        ("DELETE FROM jobs WHERE id = ?", (point,)),
        ("INSERT OR IGNORE INTO removals (point, vm) VALUES (?, ?)", (point, vm)),
    ]
