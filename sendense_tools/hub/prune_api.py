"""The hub API's prune route (registered with the hub's OPERATIONS in api.py).

The admin token prunes any node's points (`node` null: every node's); a node's token
only its own node's, and `node` defaults to it.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from sendense_tools.api.body import read_model
from sendense_tools.api.openapi import Operation
from sendense_tools.api.server import ApiError, json_ok
from sendense_tools.hub.access import ADMIN, JOBS, principal
from sendense_tools.hub.errors import NodeNotFound, UnknownPolicy
from sendense_tools.hub.schemas import Request
from sendense_tools.policy.model import NAME_PATTERN


class PruneRequest(Request):
    dry_run: bool = Field(default=False, strict=True, description="plan only: nothing is changed")
    policy: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="only the VMs this policy governs"
    )
    node: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="only this node's points; a node's own token implies it",
    )


class KeptPoint(BaseModel):
    id: str
    created_at: str
    reasons: list[str] = Field(
        description='"last", "daily 2026-12-01", "weekly 2026-W49", "monthly 2026-12",'
        ' "newest", "in use by restore R"'
    )


class RemovedPoint(BaseModel):
    id: str
    created_at: str
    action: Literal["merge", "delete"]
    into: str | None = Field(description="the child a merged point went into")
    bytes: int = Field(ge=0, description="merge: the child's bytes committed; delete: freed")


class PrunedVm(BaseModel):
    node: str
    vm: str
    policy: str | None = Field(description="the policy that governs the VM's points")
    skipped: str | None = Field(description="why nothing of this VM was pruned")
    kept: list[KeptPoint]
    removed: list[RemovedPoint]


class PruneRun(BaseModel):
    id: str
    dry_run: bool
    policy: str | None
    node: str | None
    status: Literal["completed", "failed"]
    started_at: str
    finished_at: str
    points_removed: int = Field(ge=0)
    merged_bytes: int = Field(ge=0)
    error: str | None
    vms: list[PrunedVm]


async def prune(request: web.Request) -> web.Response:
    body = await read_model(request, PruneRequest)
    jobs = request.app[JOBS]
    who = principal(request)
    node = body.node or (who if who != ADMIN else None)
    if who != ADMIN and node != who:
        raise ApiError(403, "forbidden", f"node {who} may not prune node {node}'s points")
    if node is not None and node not in jobs.nodes:
        raise NodeNotFound(node)
    if body.policy is not None:
        entries = [jobs.nodes[node]] if node is not None else list(jobs.nodes.values())
        if not any(body.policy in e.policies for e in entries):
            raise UnknownPolicy(node, body.policy)
    return json_ok(await jobs.pruner.run(body.dry_run, body.policy, node))


PRUNE_OPERATIONS = [
    Operation(
        "POST",
        "/api/v1/prune",
        prune,
        "Apply the retention of the nodes' policies (merging points others build on)",
        {200: PruneRun},
        errors=(403, 404, 409),
        body=PruneRequest,
    ),
]
