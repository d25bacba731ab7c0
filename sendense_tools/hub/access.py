"""Who is calling the hub API, and which backups that caller may see."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sendense_tools.api.auth import PRINCIPAL
from sendense_tools.hub.errors import BackupNotFound
from sendense_tools.hub.jobs import JobManager

ADMIN = "admin"
JOBS = web.AppKey("jobs", JobManager)


def principal(request: web.Request) -> str:
    return request[PRINCIPAL]


def may_see(request: web.Request, node: str) -> bool:
    """The admin sees every node's jobs, a node its own."""
    who = principal(request)
    return who == ADMIN or node == who


def listed_node(request: web.Request, asked: str | None) -> tuple[bool, str | None]:
    """A listing's node filter: (whether the caller may see any of it, the node to list).

    The admin lists `asked` (None: every node); a node its own only, nothing of another's.
    """
    who = principal(request)
    if who == ADMIN:
        return True, asked
    return asked in (None, who), who


def visible_backup(request: web.Request, backup_id: str) -> dict[str, Any]:
    record = request.app[JOBS].store.record(backup_id)
    # Other nodes' backups look absent rather than forbidden: ids do not leak.
    if record is None or not may_see(request, record["node"]):
        raise BackupNotFound(backup_id)
    return record
