"""The node API (aiohttp): VM disks, start / follow / cancel a backup."""

from __future__ import annotations

from aiohttp import web

from sendense_tools.api.auth import token_matches
from sendense_tools.api.body import read_model
from sendense_tools.api.openapi import Operation
from sendense_tools.api.server import ApiError, json_ok, make_api
from sendense_tools.nbd.endpoint import TlsPsk, parse_nbd_targets
from sendense_tools.node.errors import (
    BadTargets,
    BadTls,
    JobExists,
    JobNotFound,
    SpoolError,
    VcenterError,
    VmBusy,
)
from sendense_tools.node.forwards import TargetRefused, TunnelForwards
from sendense_tools.node.jobs import JobManager
from sendense_tools.node.schemas import (
    NodeHealth,
    NodeJob,
    StartAnswer,
    StartRequest,
    VmDescription,
)
from sendense_tools.vsphere.inventory import VmNotFound

JOBS = web.AppKey("jobs", JobManager)
FORWARDS = web.AppKey("forwards", TunnelForwards)


# The one place that decides the HTTP status of each domain error.
ERRORS: dict[type[Exception], tuple[int, str]] = {
    BadTargets: (400, "bad_nbd_targets"),
    BadTls: (400, "bad_nbd_tls"),
    JobNotFound: (404, "job_not_found"),
    VmNotFound: (404, "vm_not_found"),
    JobExists: (409, "job_exists"),
    VmBusy: (409, "vm_busy"),
    TargetRefused: (422, "nbd_target_refused"),
    VcenterError: (502, "vcenter_error"),
    SpoolError: (503, "spool_unavailable"),
}


def node_errors(exc: Exception) -> ApiError | None:
    """The node's domain errors as HTTP answers, by the closest class in ERRORS."""
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            status, code = ERRORS[cls]
            return ApiError(status, code, str(exc))
    return None


async def get_vm(request: web.Request) -> web.Response:
    info = await request.app[JOBS].describe(request.match_info["vm"])
    return json_ok(info.as_dict())


async def start_backup(request: web.Request) -> web.Response:
    body = await read_model(request, StartRequest)
    try:
        tls = TlsPsk(body.nbd_tls.username, body.nbd_tls.psk) if body.nbd_tls else None
    except ValueError as exc:
        raise BadTls(f"nbd_tls: {exc}") from None
    try:
        targets = parse_nbd_targets(body.nbd_targets, tls)
    except ValueError as exc:
        raise BadTargets(f"nbd_targets: {exc}") from None
    routed = request.app[FORWARDS].route_all(targets)
    job = await request.app[JOBS].start(body.job_id, body.vm, routed, body.mode, body.previous())
    return json_ok({"job_id": job.job_id, "status": job.status}, status=202)


async def get_job(request: web.Request) -> web.Response:
    return json_ok(request.app[JOBS].get(request.match_info["job_id"]).as_dict())


async def cancel_job(request: web.Request) -> web.Response:
    job = request.app[JOBS].cancel(request.match_info["job_id"])
    return json_ok(job.as_dict(), status=202 if job.status == "running" else 200)


async def healthz(request: web.Request) -> web.Response:
    return json_ok({"status": "ok", "running_backups": request.app[JOBS].running()})


JOB = "/api/v1/backup/{job_id}"
OPERATIONS = [
    Operation(
        "GET",
        "/api/v1/vms/{vm}",
        get_vm,
        "A VM's disks (key order) from vCenter",
        {200: VmDescription},
        errors=(404, 502),
    ),
    Operation(
        "POST",
        "/api/v1/backup/start",
        start_backup,
        "Snapshot a VM and copy its disks into the hub's exports",
        {202: StartAnswer},
        errors=(404, 409, 502, 503),
        body=StartRequest,
    ),
    Operation("GET", JOB, get_job, "One backup job of this node", {200: NodeJob}, errors=(404,)),
    Operation(
        "POST",
        f"{JOB}/cancel",
        cancel_job,
        "Cancel a running backup (its snapshot is removed)",
        {200: NodeJob, 202: NodeJob},
        errors=(404,),
    ),
    Operation("GET", "/healthz", healthz, "Liveness", {200: NodeHealth}, public=True),
]


def make_app(jobs: JobManager, token: str, forwards: TunnelForwards) -> web.Application:
    app = make_api(
        "Sendense node API",
        OPERATIONS,
        lambda t: "hub" if token_matches(t, [token]) else None,
        node_errors,
    )
    app[JOBS] = jobs
    app[FORWARDS] = forwards
    return app
