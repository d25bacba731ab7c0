"""JSON errors and bearer-token authentication for the aiohttp apps."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Who made the request: whatever `authenticate` returned for its token.
PRINCIPAL = web.RequestKey("principal", object)


class ApiError(Exception):
    """Raised by handlers; rendered as {"error", "message"} with `status`."""

    def __init__(self, status: int, code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def error_response(status: int, code: str, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


def json_ok(data: object, status: int = 200) -> web.Response:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return web.json_response(data, status=status)


async def read_model(request: web.Request, model: type[M]) -> M:
    """Parse the JSON body into `model`; 400 for non-JSON, 422 for wrong fields."""
    try:
        raw = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "request body is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "bad_request", "request body must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        raise ApiError(422, "invalid", f"{where}: {first['msg']}") from None


def token_matches(presented: str, tokens: Iterable[str]) -> str | None:
    """Return the first known token equal to `presented` (constant-time compare)."""
    found = None
    for t in tokens:
        if hmac.compare_digest(presented.encode(), t.encode()):
            found = t
    return found


def make_middlewares(
    authenticate: Callable[[str], object | None],
    public_paths: frozenset[str] = frozenset({"/healthz"}),
) -> list:
    """Errors as JSON everywhere, and a bearer token on every non-public path.

    `authenticate(token)` returns the caller's identity (stored as
    request[PRINCIPAL]) or None when the token is unknown.
    """

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, **exc.extra)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
            return error_response(exc.status, code, exc.reason)

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in public_paths:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthorized", "missing bearer token")
        principal = authenticate(token.strip())
        if principal is None:
            raise ApiError(401, "unauthorized", "invalid bearer token")
        request[PRINCIPAL] = principal
        return await handler(request)

    return [errors, auth]


async def serve_app(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner
