"""The hub API's restore routes (registered with the hub's OPERATIONS in api.py).

A node's token sees and restores only its own node's points and restores; the
admin's sees all. Someone else's look absent (404), so ids do not leak.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sendense_tools.api.body import read_model, read_query
from sendense_tools.api.openapi import Operation
from sendense_tools.api.server import json_ok
from sendense_tools.hub.access import JOBS, listed_node, may_see, principal, visible_backup
from sendense_tools.hub.errors import RestoreNotFound
from sendense_tools.hub.restore_schemas import (
    RestoreListQuery,
    RestoreRecord,
    RestoreReport,
    RestoreRequest,
)


def _visible(request: web.Request) -> dict[str, Any]:
    restore_id = request.match_info["id"]
    record = request.app[JOBS].store.restore(restore_id)
    if record is None or not may_see(request, record["node"]):
        raise RestoreNotFound(restore_id)
    return record


async def start_restore(request: web.Request) -> web.Response:
    point = visible_backup(request, request.match_info["id"])
    body = await read_model(request, RestoreRequest)
    record = await request.app[JOBS].restores.start(point, body.model_dump())
    return json_ok(record, status=201)


async def list_restores(request: web.Request) -> web.Response:
    query = read_query(request, RestoreListQuery)
    visible, node = listed_node(request, query.node)
    if not visible:
        return json_ok([])
    store = request.app[JOBS].store
    found = store.restores(node=node, status=query.status, backup=query.backup, limit=query.limit)
    return json_ok(found)


async def get_restore(request: web.Request) -> web.Response:
    return json_ok(_visible(request))


async def cancel_restore(request: web.Request) -> web.Response:
    record = _visible(request)
    return json_ok(await request.app[JOBS].restores.cancel(record["id"], principal(request)))


async def put_restore_progress(request: web.Request) -> web.Response:
    record = _visible(request)
    report = await read_model(request, RestoreReport)
    answer = request.app[JOBS].restores.progress(record["id"], report.model_dump())
    return json_ok(answer, status=202 if report.status != "running" else 200)


RESTORE = "/api/v1/restores/{id}"
RESTORE_OPERATIONS = [
    Operation(
        "POST",
        "/api/v1/backups/{id}/restore",
        start_restore,
        "Restore a completed backup into vCenter as a new VM",
        {201: RestoreRecord},
        errors=(404, 409, 422, 502, 503),
        body=RestoreRequest,
    ),
    Operation(
        "GET",
        "/api/v1/restores",
        list_restores,
        "Restore records, newest first (a node sees its own only)",
        {200: list[RestoreRecord]},
        query=RestoreListQuery,
    ),
    Operation(
        "GET", RESTORE, get_restore, "One restore record", {200: RestoreRecord}, errors=(404,)
    ),
    Operation(
        "POST",
        f"{RESTORE}/cancel",
        cancel_restore,
        "Cancel a running restore",
        {200: RestoreRecord},
        errors=(404, 409),
    ),
    Operation(
        "PUT",
        f"{RESTORE}/progress",
        put_restore_progress,
        "The node's progress or final report of a restore",
        {200: RestoreRecord, 202: RestoreRecord},
        errors=(404, 409, 422),
        body=RestoreReport,
    ),
]
