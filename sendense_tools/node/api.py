"""The node API (aiohttp): VM disks, start / follow / cancel a backup."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from sendense_tools.api.server import ApiError, json_ok, make_middlewares, read_model, token_matches
from sendense_tools.nbd.endpoint import NbdEndpoint, TlsPsk, parse_nbd_targets
from sendense_tools.node.jobs import JobManager

JOBS = web.AppKey("jobs", JobManager)
NBD_HOST = web.AppKey("nbd_host", str)

# The job id becomes part of the snapshot name and URLs: keep it plain.
JobId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]


class NbdTls(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=255)
    psk: str = Field(min_length=2, max_length=1024)


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: JobId
    vm: str = Field(min_length=1, max_length=255)
    nbd_targets: str = Field(min_length=1, max_length=65536)
    nbd_tls: NbdTls | None = None


async def get_vm(request: web.Request) -> web.Response:
    info = await request.app[JOBS].describe(request.match_info["vm"])
    return json_ok(info.as_dict())


async def start_backup(request: web.Request) -> web.Response:
    body = await read_model(request, StartRequest)
    try:
        tls = TlsPsk(body.nbd_tls.username, body.nbd_tls.psk) if body.nbd_tls else None
    except ValueError as exc:
        raise ApiError(400, "bad_nbd_tls", f"nbd_tls: {exc}") from None
    try:
        targets = parse_nbd_targets(body.nbd_targets, tls)
    except ValueError as exc:
        raise ApiError(400, "bad_nbd_targets", f"nbd_targets: {exc}") from None
    if request.app[NBD_HOST]:
        targets = {d: via_host(t, request.app[NBD_HOST]) for d, t in targets.items()}
    job = await request.app[JOBS].start(body.job_id, body.vm, targets)
    return json_ok({"job_id": job.job_id, "status": job.status}, status=202)


async def get_job(request: web.Request) -> web.Response:
    return json_ok(request.app[JOBS].get(request.match_info["job_id"]).as_dict())


async def cancel_job(request: web.Request) -> web.Response:
    job = request.app[JOBS].cancel(request.match_info["job_id"])
    return json_ok(job.as_dict(), status=202 if job.status == "running" else 200)


async def healthz(request: web.Request) -> web.Response:
    jobs = request.app[JOBS]
    running = sum(1 for j in jobs.jobs.values() if j.status == "running")
    return json_ok({"status": "ok", "running_backups": running})


def via_host(target: NbdEndpoint, host: str) -> NbdEndpoint:
    """The same export reached at `host` (the local end of the tunnel's forward)."""
    addr = target.address
    if addr.port is None:
        raise ApiError(400, "bad_nbd_targets", f"nbd_targets: {target.uri}: not a TCP target")
    return NbdEndpoint(f"nbd://{host}:{addr.port}/{addr.export}", target.tls)


def make_app(jobs: JobManager, token: str, nbd_host: str = "") -> web.Application:
    app = web.Application(
        middlewares=make_middlewares(lambda t: "hub" if token_matches(t, [token]) else None),
        client_max_size=1024 * 1024,
    )
    app[JOBS] = jobs
    app[NBD_HOST] = nbd_host
    app.router.add_get("/api/v1/vms/{vm}", get_vm)
    app.router.add_post("/api/v1/backup/start", start_backup)
    app.router.add_get("/api/v1/backup/{job_id}", get_job)
    app.router.add_post("/api/v1/backup/{job_id}/cancel", cancel_job)
    app.router.add_get("/healthz", healthz)
    return app
