"""The hub's HTTP API (aiohttp): backups, NBD slot pools, health and metrics (restores:
restore_api.py, in the same OPERATIONS and the same STATUSES)."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Callable

from aiohttp import web

from sendense_tools.api.auth import token_matches
from sendense_tools.api.body import read_model, read_query
from sendense_tools.api.openapi import TEXT, Operation
from sendense_tools.api.server import ApiError, json_ok, make_api
from sendense_tools.hub.access import ADMIN, JOBS, listed_node, principal, visible_backup
from sendense_tools.hub.allocator import ExportCapReached, PoolExhausted
from sendense_tools.hub.errors import (
    BackupNotFound,
    ChainBroken,
    Finishing,
    JobUnknownToNode,
    NameBusy,
    NoChecksum,
    NodeError,
    NodeNotFound,
    NodeRefused,
    NodeUnreachable,
    NoDisks,
    NoHardware,
    NoParent,
    NotActive,
    NotCompleted,
    NotFinished,
    PruneRunning,
    RestoreNotFound,
    StartAborted,
    UnknownDisk,
    UnknownPolicy,
    VmBusy,
    VmNotFound,
)
from sendense_tools.hub.exports import ExportError
from sendense_tools.hub.images import ImageError, StorageError
from sendense_tools.hub.jobs import JobManager
from sendense_tools.hub.metrics import CONTENT_TYPE, gather, nbd_metrics, prometheus
from sendense_tools.hub.prune_api import PRUNE_OPERATIONS
from sendense_tools.hub.restore_api import RESTORE_OPERATIONS
from sendense_tools.hub.schemas import (
    Allocation,
    BackupRecord,
    Health,
    ListQuery,
    NbdMetrics,
    ProgressReport,
    StartRequest,
    VerifyResult,
)

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
STORAGE_CODES = {
    errno.EACCES: "storage_denied",
    errno.EPERM: "storage_denied",
    errno.EROFS: "storage_read_only",
}


def make_authenticator(admin_token: str, node_tokens: Callable[[], dict[str, str]]):
    """Token -> principal: "admin" or a node id (a node's token names that node).

    `node_tokens` is read at every request: a reload swaps the node table live.
    """

    def authenticate(token: str) -> str | None:
        if token_matches(token, [admin_token]):
            return ADMIN
        by_token = {t: n for n, t in node_tokens().items()}
        found = token_matches(token, by_token)
        return by_token[found] if found else None

    return authenticate


# Each domain error's status and code; its message is the error's own text.
STATUSES: dict[type[Exception], tuple[int, str]] = {
    BackupNotFound: (404, "backup_not_found"),
    RestoreNotFound: (404, "restore_not_found"),
    NodeNotFound: (404, "node_not_found"),
    VmNotFound: (404, "vm_not_found"),
    VmBusy: (409, "vm_busy"),
    UnknownPolicy: (422, "unknown_policy"),
    PruneRunning: (409, "prune_running"),
    NotActive: (409, "not_active"),
    Finishing: (409, "finishing"),
    NotFinished: (409, "not_finished"),
    StartAborted: (409, "start_aborted"),
    NoParent: (409, "no_parent"),
    NotCompleted: (409, "not_completed"),
    NoChecksum: (409, "no_checksum"),
    NoHardware: (409, "no_hardware"),
    ChainBroken: (409, "chain_broken"),
    NameBusy: (409, "vm_exists"),
    UnknownDisk: (422, "unknown_disk"),
    NoDisks: (422, "no_disks"),
    NodeError: (502, "node_error"),
    NodeUnreachable: (502, "node_unreachable"),
    JobUnknownToNode: (502, "node_error"),
    ExportError: (502, "export_failed"),
    ImageError: (502, "export_failed"),
}
# A node's refusal keeps its status when it is the client's to fix, else it is a 502.
NODE_STATUSES_PASSED_ON = (400, 404, 409, 422)


def hub_errors(exc: Exception) -> ApiError | None:
    """The hub's domain errors as HTTP answers (the one place that decides their status)."""
    if isinstance(exc, PoolExhausted):
        return ApiError(
            503,
            "pool_exhausted",
            str(exc),
            needed=exc.needed,
            free=exc.free,
        )
    if isinstance(exc, ExportCapReached):
        return ApiError(
            503,
            "too_many_exports",
            f"hub at its export limit: {exc}",
            needed=exc.needed,
            running=exc.running,
            max_exports=exc.cap,
        )
    if isinstance(exc, NodeRefused):
        status = exc.status if exc.status in NODE_STATUSES_PASSED_ON else 502
        return ApiError(status, exc.code, str(exc))
    # getattr: only errors raised by sqlite itself carry the code.
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return ApiError(507, "insufficient_storage", f"the hub's state database: {exc}")
    if isinstance(exc, StorageError):
        if exc.errno in NO_SPACE:
            return ApiError(507, "insufficient_storage", str(exc))
        # Not the client's fault and not retryable by it: the operator must fix the repository.
        return ApiError(503, STORAGE_CODES.get(exc.errno, "storage_error"), str(exc))
    for kind, (status, code) in STATUSES.items():
        if isinstance(exc, kind):
            return ApiError(status, code, str(exc))
    return None


async def start_backup(request: web.Request) -> web.Response:
    body = await read_model(request, StartRequest)
    who = principal(request)
    node = body.node or (who if who != ADMIN else None)
    if node is None:
        raise ApiError(422, "invalid", "node: required when the admin token starts a backup")
    if who != ADMIN and node != who:
        raise ApiError(403, "forbidden", f"node {who} may not start backups for node {node}")
    record = await request.app[JOBS].start_backup(body.vm, node, body.mode, body.policy)
    return json_ok(record, status=201)


async def list_backups(request: web.Request) -> web.Response:
    query = read_query(request, ListQuery)
    visible, node = listed_node(request, query.node)
    if not visible:
        return json_ok([])
    store = request.app[JOBS].store
    return json_ok(store.records(node=node, status=query.status, vm=query.vm, limit=query.limit))


async def get_backup(request: web.Request) -> web.Response:
    return json_ok(visible_backup(request, request.match_info["id"]))


async def put_progress(request: web.Request) -> web.Response:
    backup_id = request.match_info["id"]
    visible_backup(request, backup_id)
    report = await read_model(request, ProgressReport)
    record = request.app[JOBS].progress(backup_id, report.model_dump())
    return json_ok(record, status=202 if report.status != "running" else 200)


async def cancel_backup(request: web.Request) -> web.Response:
    backup_id = request.match_info["id"]
    visible_backup(request, backup_id)
    return json_ok(await request.app[JOBS].cancel(backup_id, principal(request)))


async def verify_backup(request: web.Request) -> web.Response:
    backup_id = request.match_info["id"]
    visible_backup(request, backup_id)
    return json_ok(await request.app[JOBS].verify(backup_id))


def _own_nodes(request: web.Request) -> list[str]:
    """The pools a caller may see: every node's for the admin, its own for a node."""
    who = principal(request)
    nodes = list(request.app[JOBS].nodes)
    return nodes if who == ADMIN else [who]


async def nbd_ports(request: web.Request) -> web.Response:
    jobs = request.app[JOBS]
    who = principal(request)
    return json_ok(jobs.store.allocations(node=None if who == ADMIN else who))


async def nbd_pool_metrics(request: web.Request) -> web.Response:
    jobs = request.app[JOBS]
    pools = jobs.pools(_own_nodes(request))
    return json_ok(
        nbd_metrics(
            jobs.allocator.hub_metrics(list(jobs.nodes)),
            pools,
            jobs.qemu_nbd_processes(),
            jobs.allocator.max_exports,
        )
    )


async def healthz(request: web.Request) -> web.Response:
    return json_ok({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    # A node's token sees its own VMs and jobs only, as in the backup lists.
    _, node = listed_node(request, None)
    scrape = await gather(request.app[JOBS], node, _own_nodes(request))
    return web.Response(body=prometheus(scrape).encode(), headers={"Content-Type": CONTENT_TYPE})


BACKUP = "/api/v1/backups/{id}"
OPERATIONS = [
    Operation(
        "POST",
        "/api/v1/backups",
        start_backup,
        "Start a backup of one VM on one node",
        {201: BackupRecord},
        errors=(403, 404, 409, 422, 502, 503, 507),
        body=StartRequest,
    ),
    Operation(
        "GET",
        "/api/v1/backups",
        list_backups,
        "Backup records, newest first (a node sees its own only)",
        {200: list[BackupRecord]},
        query=ListQuery,
    ),
    Operation("GET", BACKUP, get_backup, "One backup record", {200: BackupRecord}, errors=(404,)),
    Operation(
        "PUT",
        f"{BACKUP}/progress",
        put_progress,
        "The node's progress or final report",
        {200: BackupRecord, 202: BackupRecord},
        errors=(404, 409),
        body=ProgressReport,
    ),
    Operation(
        "POST",
        f"{BACKUP}/cancel",
        cancel_backup,
        "Cancel a running backup",
        {200: BackupRecord},
        errors=(404, 409),
    ),
    Operation(
        "POST",
        f"{BACKUP}/verify",
        verify_backup,
        "Re-read a finished backup's images and compare their SHA-256",
        {200: VerifyResult},
        errors=(404, 409),
    ),
    Operation(
        "GET",
        "/api/v1/nbd/ports",
        nbd_ports,
        "NBD slot allocations per node (a node sees its own)",
        {200: list[Allocation]},
    ),
    Operation(
        "GET", "/api/v1/nbd/metrics", nbd_pool_metrics, "NBD slot pools usage", {200: NbdMetrics}
    ),
    *RESTORE_OPERATIONS,
    *PRUNE_OPERATIONS,
    Operation("GET", "/healthz", healthz, "Liveness", {200: Health}, public=True),
    Operation("GET", "/metrics", metrics, "Prometheus metrics", {200: TEXT}),
]


def make_app(jobs: JobManager, admin_token: str) -> web.Application:
    authenticate = make_authenticator(admin_token, lambda: jobs.node_tokens)
    app = make_api("Sendense hub API", OPERATIONS, authenticate, hub_errors)
    app[JOBS] = jobs
    return app
