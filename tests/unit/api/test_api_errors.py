"""error_middleware: mapped domain errors, aiohttp's own errors and the last resort, all JSON."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from aiohttp import web

from sendense_tools.api.errors import ApiError, error_middleware
from sendense_tools.api.server import serve_app
from tests.fixtures.ports import free_port

pytestmark = pytest.mark.asyncio


class Full(Exception):
    pass


def domain_errors(exc: Exception) -> ApiError | None:
    return ApiError(507, "insufficient_storage", "disk full") if isinstance(exc, Full) else None


async def full(request: web.Request) -> web.Response:
    raise Full()


async def crash(request: web.Request) -> web.Response:
    raise RuntimeError("password=hunter2 in /secret/path")


async def read_body(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


@pytest.fixture
async def url():
    app = web.Application(middlewares=[error_middleware(domain_errors)], client_max_size=16)
    app.router.add_get("/full", full, allow_head=False)
    app.router.add_get("/crash", crash)
    app.router.add_post("/body", read_body)
    port = free_port()
    runner = await serve_app(app, "127.0.0.1", port)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def answer(method: str, url: str, **kw) -> tuple[int, dict, dict]:
    async with aiohttp.request(method, url, **kw) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def test_a_mapped_domain_error_gets_its_status(url):
    status, body, _ = await answer("GET", url + "/full")
    assert (status, body) == (507, {"error": "insufficient_storage", "message": "disk full"})


async def test_an_unknown_exception_is_logged_and_leaks_nothing(url, caplog):
    with caplog.at_level(logging.ERROR):
        status, body, _ = await answer("GET", url + "/crash")
    assert status == 500 and body["error"] == "internal_error"
    assert "hunter2" not in body["message"] and "secret" not in body["message"]
    assert "hunter2" in caplog.text  # the operator still gets the traceback


async def test_aiohttp_errors_are_json_and_keep_allow(url):
    status, body, _ = await answer("GET", url + "/nowhere")
    assert (status, body["error"]) == (404, "not_found")
    status, body, headers = await answer("PUT", url + "/full")
    assert (status, body["error"], headers["Allow"]) == (405, "method_not_allowed", "GET")
    status, body, _ = await answer("POST", url + "/body", data=b"x" * 100)
    assert (status, body["error"]) == (413, "body_too_large")
