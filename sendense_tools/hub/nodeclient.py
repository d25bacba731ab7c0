"""The node protocol as the hub speaks it: describe a VM; start, ask about, cancel a
backup or a restore.

Every answer the hub cannot use becomes a hub domain error (errors.py), so the
callers know whether the node acted: NodeRefused means it did not start,
NodeUnreachable means nobody knows.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from sendense_tools.api.client import ApiCallError, ApiClient
from sendense_tools.errors import SendenseError
from sendense_tools.hub.errors import (
    JobUnknownToNode,
    NodeError,
    NodeRefused,
    NodeUnreachable,
    VmNotFound,
)
from sendense_tools.hub.vminfo import check_vm_info

log = logging.getLogger(__name__)

# A cancel is a courtesy: the hub's own cleanup never waits long on it.
CANCEL_TIMEOUT = 5.0


class NodeClient:
    def __init__(self, node: str, api_url: str, token: str, timeout: float) -> None:
        self.node = node
        self.api_url = api_url
        self._token = token
        self.timeout = timeout

    def _client(self, timeout: float | None = None) -> ApiClient:
        return ApiClient(self.api_url, self._token, timeout=timeout or self.timeout)

    def _unreachable(self, exc: SendenseError) -> NodeUnreachable:
        return NodeUnreachable(f"node {self.node} is unreachable: {exc}")

    async def describe_vm(self, vm: str) -> dict[str, Any]:
        try:
            async with self._client() as client:
                info = await client.get(f"/api/v1/vms/{_quote(vm)}")
        except ApiCallError as exc:
            if exc.status == 404:
                raise VmNotFound(f"node {self.node}: {exc.message}") from None
            raise NodeError(f"node {self.node} answered HTTP {exc.status}: {exc.message}") from None
        except SendenseError as exc:
            raise self._unreachable(exc) from None
        return check_vm_info(self.node, vm, info)

    async def start(self, body: dict[str, Any], kind: str = "backup") -> None:
        """`POST /api/v1/<kind>/start` (kind: backup or restore)."""
        try:
            async with self._client() as client:
                await client.post(f"/api/v1/{kind}/start", body)
        except ApiCallError as exc:
            raise NodeRefused(self.node, exc.status, exc.code, exc.message, kind) from None
        except SendenseError as exc:
            raise self._unreachable(exc) from None

    async def job(self, job_id: str, kind: str = "backup") -> dict[str, Any]:
        """The node's view of a job (node API `GET /api/v1/<kind>/{id}`)."""
        try:
            async with self._client() as client:
                answer = await client.get(f"/api/v1/{kind}/{_quote(job_id)}")
        except ApiCallError as exc:
            if exc.status == 404:
                raise JobUnknownToNode(self.node, job_id, kind) from None
            raise NodeError(
                f"node {self.node} answered HTTP {exc.status} about {kind} {job_id}: {exc.message}"
            ) from None
        except SendenseError as exc:
            raise self._unreachable(exc) from None
        if not isinstance(answer, dict) or not isinstance(answer.get("status"), str):
            raise NodeError(f"node {self.node} described {kind} {job_id} without a status")
        return answer

    async def cancel(self, job_id: str, kind: str = "backup") -> None:
        # The node may not implement cancel or may be gone: never raises.
        try:
            async with self._client(CANCEL_TIMEOUT) as client:
                await client.post(f"/api/v1/{kind}/{_quote(job_id)}/cancel")
        except SendenseError as exc:
            log.warning("%s %s: node %s did not take the cancel: %s", kind, job_id, self.node, exc)

    async def restore_start(self, body: dict[str, Any]) -> None:
        await self.start(body, "restore")

    async def restore_job(self, restore_id: str) -> dict[str, Any]:
        return await self.job(restore_id, "restore")

    async def restore_cancel(self, restore_id: str) -> None:
        await self.cancel(restore_id, "restore")


def _quote(value: str) -> str:
    return quote(value, safe="")
