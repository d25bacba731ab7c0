"""The node API (aiohttp): VM disks, start / follow / cancel a backup."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from sendense_tools.api.auth import token_matches
from sendense_tools.api.body import read_model
from sendense_tools.api.openapi import Operation
from sendense_tools.api.server import ApiError, json_ok, make_api
from sendense_tools.nbd.buffers import PROCESS_BUDGET
from sendense_tools.nbd.endpoint import NbdEndpoint, TlsPsk, parse_nbd_targets
from sendense_tools.node.errors import (
    BadRestore,
    BadTargets,
    BadTls,
    JobExists,
    JobNotFound,
    RestoreBusy,
    SpoolError,
    VcenterError,
    VmBusy,
)
from sendense_tools.node.forwards import TargetRefused, TunnelForwards
from sendense_tools.node.jobs import JobManager
from sendense_tools.node.restore_schemas import NodeRestore, RestoreStartAnswer, RestoreStartRequest
from sendense_tools.node.restores import RestoreManager, plan_of
from sendense_tools.node.schemas import (
    NbdTls,
    NodeHealth,
    NodeJob,
    StartAnswer,
    StartRequest,
    VmDescription,
)
from sendense_tools.vsphere.inventory import VmNotFound
from sendense_tools.vsphere.placement import (
    InvalidVmName,
    UnknownDatacenter,
    UnknownDatastore,
    UnknownFolder,
    UnknownResourcePool,
    VmExists,
)

JOBS = web.AppKey("jobs", JobManager)
RESTORES = web.AppKey("restores", RestoreManager)
FORWARDS = web.AppKey("forwards", TunnelForwards)


# The one place that decides the HTTP status of each domain error.
ERRORS: dict[type[Exception], tuple[int, str]] = {
    BadRestore: (400, "bad_restore"),
    BadTargets: (400, "bad_nbd_targets"),
    BadTls: (400, "bad_nbd_tls"),
    JobNotFound: (404, "job_not_found"),
    VmNotFound: (404, "vm_not_found"),
    JobExists: (409, "job_exists"),
    RestoreBusy: (409, "restore_busy"),
    VmBusy: (409, "vm_busy"),
    VmExists: (409, "vm_exists"),
    InvalidVmName: (422, "invalid_name"),
    TargetRefused: (422, "nbd_target_refused"),
    UnknownDatacenter: (422, "unknown_datacenter"),
    UnknownDatastore: (422, "unknown_datastore"),
    UnknownFolder: (422, "unknown_folder"),
    UnknownResourcePool: (422, "unknown_resource_pool"),
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


def _endpoints(
    request: web.Request, field: str, text: str, nbd_tls: NbdTls | None
) -> dict[str, NbdEndpoint]:
    """`text` (disk0:nbd://...,...) as this node's tunnel forwards; 400/422 otherwise."""
    try:
        tls = TlsPsk(nbd_tls.username, nbd_tls.psk) if nbd_tls else None
    except ValueError as exc:
        raise BadTls(f"nbd_tls: {exc}") from None
    try:
        targets = parse_nbd_targets(text, tls)
    except ValueError as exc:
        raise BadTargets(f"{field}: {exc}") from None
    return request.app[FORWARDS].route_all(targets, field)


async def start_backup(request: web.Request) -> web.Response:
    body = await read_model(request, StartRequest)
    routed = _endpoints(request, "nbd_targets", body.nbd_targets, body.nbd_tls)
    job = await request.app[JOBS].start(body.job_id, body.vm, routed, body.mode, body.previous())
    return json_ok({"job_id": job.job_id, "status": job.status}, status=202)


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _book_handlers(book: web.AppKey, kind: str) -> tuple[Handler, Handler]:
    """GET {job_id} and POST {job_id}/cancel of one book of jobs (backups, restores)."""

    async def get(request: web.Request) -> web.Response:
        return json_ok(request.app[book].get(request.match_info["job_id"]).as_dict())

    async def cancel(request: web.Request) -> web.Response:
        job = request.app[book].cancel(request.match_info["job_id"])
        return json_ok(job.as_dict(), status=202 if job.status == "running" else 200)

    # The OpenAPI operation ids are the handlers' names.
    get.__name__, cancel.__name__ = f"get_{kind}", f"cancel_{kind}"
    return get, cancel


get_job, cancel_job = _book_handlers(JOBS, "job")


async def start_restore(request: web.Request) -> web.Response:
    body = await read_model(request, RestoreStartRequest)
    sources = _endpoints(request, "nbd_sources", body.nbd_sources, body.nbd_tls)
    job = await request.app[RESTORES].start(plan_of(body, sources))
    return json_ok({"job_id": job.job_id, "status": job.status}, status=201)


get_restore, cancel_restore = _book_handlers(RESTORES, "restore")


async def healthz(request: web.Request) -> web.Response:
    return json_ok({
        "status": "ok",
        "running_backups": request.app[JOBS].running(),
        "running_restores": request.app[RESTORES].running(),
        "copy_buffers": {
            "budget": PROCESS_BUDGET.total,
            "in_use": PROCESS_BUDGET.used_bytes,
            "peak": PROCESS_BUDGET.peak_bytes,
        },
    })  # fmt: skip


JOB = "/api/v1/backup/{job_id}"
RESTORE = "/api/v1/restore/{job_id}"
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
    Operation(
        "POST",
        "/api/v1/restore/start",
        start_restore,
        "Create a VM from a restore point's read-only exports and check its disks",
        {201: RestoreStartAnswer},
        errors=(409, 422, 502, 503),
        body=RestoreStartRequest,
    ),
    Operation(
        "GET", RESTORE, get_restore, "One restore of this node", {200: NodeRestore}, errors=(404,)
    ),
    Operation(
        "POST",
        f"{RESTORE}/cancel",
        cancel_restore,
        "Cancel a running restore (the VM and files it made are removed)",
        {200: NodeRestore, 202: NodeRestore},
        errors=(404,),
    ),
    Operation("GET", "/healthz", healthz, "Liveness", {200: NodeHealth}, public=True),
]


def make_app(
    jobs: JobManager, token: str, forwards: TunnelForwards, restores: RestoreManager
) -> web.Application:
    app = make_api(
        "Sendense node API",
        OPERATIONS,
        lambda t: "hub" if token_matches(t, [token]) else None,
        node_errors,
    )
    app[JOBS] = jobs
    app[RESTORES] = restores
    app[FORWARDS] = forwards
    return app
