"""The hub's OpenAPI document describes every route, and schemathesis finds no 5xx in it."""

from __future__ import annotations

import time

import pytest

from sendense_tools.hub.api import OPERATIONS, make_app
from tests.fixtures.schemathesis import operations_tested, run_schemathesis

from .conftest import MiB

pytestmark = pytest.mark.asyncio


async def test_the_document_lists_every_route_and_is_public(make_hub):
    h = await make_hub(ports=2)
    async with h.session.get(h.url + "/api/v1/openapi.json") as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    app = make_app(h.hub.jobs, h.tokens["admin"])
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "*"}
    assert documented == served
    start = doc["paths"]["/api/v1/backups"]["post"]
    schema = start["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/StartRequest"}
    disk = doc["components"]["schemas"]["DiskProgress"]["properties"]["bytes_copied"]
    assert disk["maximum"] == 2**63 - 1
    assert {"401", "404", "503", "507"} <= set(start["responses"])


@pytest.mark.parametrize("principal", ["admin", "node1"])
async def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    make_hub, tmp_path, principal
):
    h = await make_hub(ports=4)
    h.node.vms["web01"] = [16 * MiB]
    # One real, running backup that every {id} operation works on: the record
    # schemas are checked on real data, and progress reports reach the store.
    code, record = await h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"})
    assert code == 201
    started = time.monotonic()
    rc, out = await run_schemathesis(
        h.url, h.tokens[principal], tmp_path, {"path.id": record["id"]}
    )
    elapsed = time.monotonic() - started
    assert rc == 0, out[-6000:]
    assert operations_tested(out) == len(OPERATIONS)
    assert elapsed < 60, f"schemathesis took {elapsed:.0f} s"
