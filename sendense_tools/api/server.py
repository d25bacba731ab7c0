"""An aiohttp app from a list of operations: JSON errors, bearer auth, its OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from pydantic import BaseModel

from sendense_tools import __version__
from sendense_tools.api.auth import auth_middleware
from sendense_tools.api.errors import ApiError, ErrorMap, error_middleware
from sendense_tools.api.openapi import (
    OPENAPI_PATH,
    Operation,
    add_routes,
    openapi_document,
    public_paths,
)

# Handlers elsewhere raise ApiError imported from here.
__all__ = ["ApiError", "json_ok", "make_api", "serve_app"]

MAX_BODY = 1024 * 1024


def json_ok(data: object, status: int = 200) -> web.Response:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return web.json_response(data, status=status)


def make_api(
    title: str,
    operations: list[Operation],
    authenticate: Callable[[str], object | None],
    domain_errors: ErrorMap,
) -> web.Application:
    """The app serving `operations` plus GET /api/v1/openapi.json describing all of them."""
    document: dict = {}

    async def openapi(request: web.Request) -> web.Response:
        return json_ok(document)

    every = [
        *operations,
        Operation(
            "GET", OPENAPI_PATH, openapi, "This API's OpenAPI document", {200: dict}, public=True
        ),
    ]
    document.update(openapi_document(title, __version__, every))
    app = web.Application(
        middlewares=[
            error_middleware(domain_errors),
            auth_middleware(authenticate, public_paths(every)),
        ],
        client_max_size=MAX_BODY,
    )
    add_routes(app, every)
    return app


async def serve_app(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner
