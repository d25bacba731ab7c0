"""The hub's HTTP API (aiohttp): backups, NBD pool, health and metrics."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from sendense_tools.api.server import (
    PRINCIPAL,
    ApiError,
    json_ok,
    make_middlewares,
    read_model,
    token_matches,
)
from sendense_tools.hub.jobs import JobManager
from sendense_tools.hub.metrics import nbd_metrics, prometheus

ADMIN = "admin"
JOBS = web.AppKey("jobs", JobManager)


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vm: str = Field(min_length=1, max_length=255)
    node: str | None = Field(default=None, min_length=1, max_length=128)


class DiskProgress(BaseModel):
    disk_id: str = Field(min_length=1)
    bytes_copied: int = Field(ge=0)
    bytes_total: int = Field(ge=0)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")


class ProgressReport(BaseModel):
    status: Literal["running", "completed", "failed"]
    snapshot: str | None = None
    error: str | None = None
    disks: list[DiskProgress] = []


def make_authenticator(admin_token: str, node_tokens: dict[str, str]):
    """Token -> principal: "admin" or a node id (a node's token names that node)."""
    by_token = {t: n for n, t in node_tokens.items() if t != admin_token}

    def authenticate(token: str) -> str | None:
        if token_matches(token, [admin_token]):
            return ADMIN
        found = token_matches(token, by_token)
        return by_token[found] if found else None

    return authenticate


def _principal(request: web.Request) -> str:
    return request[PRINCIPAL]


def _visible(request: web.Request, backup_id: str) -> dict:
    record = request.app[JOBS].store.record(backup_id)
    who = _principal(request)
    # Other nodes' backups look absent rather than forbidden: ids do not leak.
    if record is None or (who != ADMIN and record["node"] != who):
        raise ApiError(404, "backup_not_found", f"backup {backup_id} does not exist")
    return record


async def start_backup(request: web.Request) -> web.Response:
    body = await read_model(request, StartRequest)
    who = _principal(request)
    node = body.node or (who if who != ADMIN else None)
    if node is None:
        raise ApiError(422, "invalid", "node: required when the admin token starts a backup")
    if who != ADMIN and node != who:
        raise ApiError(403, "forbidden", f"node {who} may not start backups for node {node}")
    record = await request.app[JOBS].start_backup(body.vm, node)
    return json_ok(record, status=201)


async def list_backups(request: web.Request) -> web.Response:
    who = _principal(request)
    q = request.query
    node = q.get("node")
    if who != ADMIN:
        if node not in (None, who):
            return json_ok([])
        node = who
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        raise ApiError(400, "bad_request", "limit must be an integer") from None
    if not 1 <= limit <= 10000:
        raise ApiError(400, "bad_request", "limit must be between 1 and 10000")
    store = request.app[JOBS].store
    return json_ok(store.records(node=node, status=q.get("status"), vm=q.get("vm"), limit=limit))


async def get_backup(request: web.Request) -> web.Response:
    return json_ok(_visible(request, request.match_info["id"]))


async def put_progress(request: web.Request) -> web.Response:
    backup_id = request.match_info["id"]
    _visible(request, backup_id)
    report = await read_model(request, ProgressReport)
    record = request.app[JOBS].progress(backup_id, report.model_dump())
    return json_ok(record, status=202 if report.status != "running" else 200)


async def cancel_backup(request: web.Request) -> web.Response:
    backup_id = request.match_info["id"]
    _visible(request, backup_id)
    return json_ok(await request.app[JOBS].cancel(backup_id, _principal(request)))


async def verify_backup(request: web.Request) -> web.Response:
    backup_id = request.match_info["id"]
    _visible(request, backup_id)
    return json_ok(await request.app[JOBS].verify(backup_id))


async def nbd_ports(request: web.Request) -> web.Response:
    jobs = request.app[JOBS]
    who = _principal(request)
    rows = [
        r
        for r in jobs.store.allocations()
        if who == ADMIN or (jobs.store.job_row(r["job_id"]) or {}).get("node") == who
    ]
    return json_ok(rows)


async def nbd_pool_metrics(request: web.Request) -> web.Response:
    jobs = request.app[JOBS]
    return json_ok(nbd_metrics(jobs.allocator.metrics(), jobs.qemu_nbd_processes()))


async def healthz(request: web.Request) -> web.Response:
    return json_ok({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    jobs = request.app[JOBS]
    text = prometheus(
        jobs.allocator.metrics(), jobs.qemu_nbd_processes(), jobs.store.status_counts()
    )
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


def make_app(jobs: JobManager, admin_token: str, node_tokens: dict[str, str]) -> web.Application:
    app = web.Application(
        middlewares=make_middlewares(make_authenticator(admin_token, node_tokens)),
        client_max_size=1024 * 1024,
    )
    app[JOBS] = jobs
    app.router.add_post("/api/v1/backups", start_backup)
    app.router.add_get("/api/v1/backups", list_backups)
    app.router.add_get("/api/v1/backups/{id}", get_backup)
    app.router.add_put("/api/v1/backups/{id}/progress", put_progress)
    app.router.add_post("/api/v1/backups/{id}/cancel", cancel_backup)
    app.router.add_post("/api/v1/backups/{id}/verify", verify_backup)
    app.router.add_get("/api/v1/nbd/ports", nbd_ports)
    app.router.add_get("/api/v1/nbd/metrics", nbd_pool_metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app
