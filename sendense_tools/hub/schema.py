"""The hub database's tables, and the migrations that bring an older hub.db up to date."""

from __future__ import annotations

import sqlite3

# One node's slot is one row: slots repeat across nodes.
ALLOCATIONS = """
CREATE TABLE {name} (
    node TEXT NOT NULL,
    port INTEGER NOT NULL,
    job_id TEXT NOT NULL,
    disk_id TEXT NOT NULL,
    pid INTEGER,
    PRIMARY KEY (node, port)
);
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    vm TEXT NOT NULL,
    node TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    error TEXT,
    snapshot TEXT,
    nbd_targets TEXT NOT NULL DEFAULT '',
    tls_username TEXT,
    key_dir TEXT,
    phase TEXT,
    mode TEXT,
    mode_reason TEXT,
    parent TEXT,
    hardware TEXT,
    policy TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE TABLE IF NOT EXISTS disks (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    idx INTEGER NOT NULL,
    disk_id TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    nbd_port INTEGER,
    export_name TEXT,
    qcow2_path TEXT,
    bytes_copied INTEGER NOT NULL DEFAULT 0,
    bytes_total INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT,
    sha256_qcow2 TEXT,
    change_id TEXT,
    checksum TEXT,
    changes TEXT,
    areas TEXT,
    PRIMARY KEY (job_id, disk_id)
);
-- A restore's slots are allocations rows too, with the restore id as their job_id.
CREATE TABLE IF NOT EXISTS restores (
    id TEXT PRIMARY KEY,
    backup_id TEXT NOT NULL,
    node TEXT NOT NULL,
    vm TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    phase TEXT,
    datastore TEXT,
    folder TEXT,
    resource_pool TEXT,
    power_on INTEGER NOT NULL,
    moref TEXT,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    error TEXT,
    -- The hub's own warnings (a point without hardware), then the node's latest.
    warnings TEXT NOT NULL DEFAULT '[]',
    node_warnings TEXT NOT NULL DEFAULT '[]',
    chain TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS restores_status ON restores(status);
-- One row per `sendense backup prune` (dry runs too): /metrics counts them.
CREATE TABLE IF NOT EXISTS prune_runs (
    id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    dry_run INTEGER NOT NULL,
    policy TEXT,
    status TEXT NOT NULL,
    points_removed INTEGER NOT NULL DEFAULT 0,
    merged_bytes INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    node TEXT
);
-- A merge of a pruned point into its child, from before its first disk is touched
-- until the transaction that drops the point's rows: what a restart must finish.
CREATE TABLE IF NOT EXISTS merges (
    point TEXT PRIMARY KEY,
    child TEXT NOT NULL,
    node TEXT NOT NULL,
    vm TEXT NOT NULL,
    -- JSON: per disk {disk_id, point (its qcow2), child (its qcow2), backing (the
    -- point's own backing file, or null)}.
    disks TEXT NOT NULL,
    started_at TEXT NOT NULL
);
-- A pruned point whose rows are gone and whose folder may not be yet (written in the
-- transaction that drops the rows): the only folders a restart removes.
CREATE TABLE IF NOT EXISTS removals (
    point TEXT PRIMARY KEY,
    vm TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS restore_disks (
    restore_id TEXT NOT NULL REFERENCES restores(id),
    idx INTEGER NOT NULL,
    disk_id TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    bytes_written INTEGER NOT NULL DEFAULT 0,
    bytes_total INTEGER NOT NULL DEFAULT 0,
    expected_checksum TEXT,
    checksum TEXT,
    verified INTEGER,
    PRIMARY KEY (restore_id, disk_id)
);
""" + ALLOCATIONS.format(name="IF NOT EXISTS allocations")

# Before per-node slots a port was unique hub-wide; the rows move over with their
# job's node, so reconciliation still finds the qemu-nbd they name.
MIGRATE_ALLOCATIONS = (
    "ALTER TABLE allocations RENAME TO allocations_hubwide;"
    + ALLOCATIONS.format(name="allocations")
    + """
INSERT INTO allocations (node, port, job_id, disk_id, pid)
    SELECT COALESCE(j.node, ''), a.port, a.job_id, a.disk_id, a.pid
    FROM allocations_hubwide a LEFT JOIN jobs j ON j.id = a.job_id;
DROP TABLE allocations_hubwide;
"""
)


def migrate(db: sqlite3.Connection) -> None:
    """Create what is missing; an older hub.db keeps its rows (NULL in new columns)."""
    db.executescript(SCHEMA)
    if "node" not in _columns(db, "allocations"):
        db.executescript(f"BEGIN IMMEDIATE;{MIGRATE_ALLOCATIONS}COMMIT;")
    for table, names in NEW_COLUMNS.items():
        have = _columns(db, table)
        for name in names:
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} TEXT")


# Columns added after the first release, per table.
NEW_COLUMNS = {
    "jobs": ("phase", "mode", "mode_reason", "parent", "hardware", "policy"),
    "disks": ("change_id", "checksum", "changes", "areas"),
    "prune_runs": ("node",),
}


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
