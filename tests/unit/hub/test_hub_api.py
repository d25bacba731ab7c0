"""hub_errors: the one place that gives the hub's domain errors their HTTP status."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from sendense_tools.hub.allocator import ExportCapReached, PoolExhausted
from sendense_tools.hub.api import hub_errors, make_authenticator
from sendense_tools.hub.errors import (
    BackupNotFound,
    Finishing,
    NodeNotFound,
    NodeRefused,
    NodeUnreachable,
    StartAborted,
    VmBusy,
)
from sendense_tools.hub.exports import ExportError
from sendense_tools.hub.images import StorageError

IMAGE = Path("/repo/vm/1/disk0.qcow2")


@pytest.mark.parametrize(
    ("code", "status", "name"),
    [
        (errno.ENOSPC, 507, "insufficient_storage"),
        (errno.EDQUOT, 507, "insufficient_storage"),
        (errno.EACCES, 503, "storage_denied"),
        (errno.EPERM, 503, "storage_denied"),
        (errno.EROFS, 503, "storage_read_only"),
        (errno.EIO, 503, "storage_error"),
    ],
)
def test_storage_errors_name_their_cause(code, status, name):
    mapped = hub_errors(StorageError(IMAGE, code, "why"))
    assert mapped is not None
    assert (mapped.status, mapped.code) == (status, name)
    assert mapped.message == f"cannot create {IMAGE}: why"


def test_an_exhausted_pool_is_503_with_the_numbers():
    mapped = hub_errors(PoolExhausted("a", 3, 2))
    assert mapped is not None and (mapped.status, mapped.code) == (503, "pool_exhausted")
    assert mapped.extra == {"needed": 3, "free": 2}
    assert "node a's pool" in mapped.message


def test_the_export_cap_is_503_naming_how_many_run():
    mapped = hub_errors(ExportCapReached(2, 403, 404))
    assert mapped is not None and (mapped.status, mapped.code) == (503, "too_many_exports")
    assert mapped.extra == {"needed": 2, "running": 403, "max_exports": 404}
    assert "403 of at most 404 already run" in mapped.message


def sqlite_error(*statements: str) -> sqlite3.Error:
    db = sqlite3.connect(":memory:")
    try:
        for sql in statements:
            db.execute(sql)
    except sqlite3.Error as exc:
        return exc
    finally:
        db.close()
    raise AssertionError("no error")


def test_a_full_state_database_is_507_and_other_errors_are_not_mapped():
    # max_page_count makes SQLite itself answer SQLITE_FULL, as a full disk does.
    full = sqlite_error(
        "CREATE TABLE t (x)",
        "PRAGMA max_page_count = 2",
        "INSERT INTO t VALUES (zeroblob(100000))",
    )
    mapped = hub_errors(full)
    assert mapped is not None and (mapped.status, mapped.code) == (507, "insufficient_storage")
    assert hub_errors(sqlite_error("SELECT * FROM nope")) is None
    assert hub_errors(sqlite3.OperationalError("made by hand")) is None
    assert hub_errors(RuntimeError("bug")) is None


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (BackupNotFound("b1"), 404, "backup_not_found"),
        (NodeNotFound("n9"), 404, "node_not_found"),
        (VmBusy("web", "b1"), 409, "vm_busy"),
        (Finishing("b1"), 409, "finishing"),
        (StartAborted("backup b1 cancelled by admin"), 409, "start_aborted"),
        (NodeUnreachable("node n1 is unreachable: refused"), 502, "node_unreachable"),
        (NodeRefused("n1", 409, "vm_busy", "busy"), 409, "vm_busy"),
        (NodeRefused("n1", 500, "internal_error", "oops"), 502, "internal_error"),
        (ExportError("qemu-nbd for disk0 exit status 1"), 502, "export_failed"),
    ],
)
def test_hub_domain_errors_have_one_status_each(error, status, code):
    mapped = hub_errors(error)
    assert (mapped.status, mapped.code, mapped.message) == (status, code, str(error))


def test_the_authenticator_reads_the_live_node_tokens():
    tables = [{"n1": "token-1"}]
    authenticate = make_authenticator("admin-token", lambda: tables[-1])
    assert (authenticate("admin-token"), authenticate("token-1")) == ("admin", "n1")
    # What JobManager.set_nodes does on reload: a new table replaces the old one.
    tables.append({"n2": "token-2"})
    assert (authenticate("token-1"), authenticate("token-2")) == (None, "n2")
