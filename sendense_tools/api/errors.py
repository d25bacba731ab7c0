"""Every failure as one JSON error body; domain errors mapped to HTTP in one place per API.

Each API passes its own `ErrorMap` (domain exception -> ApiError) to
`error_middleware`; an exception that no map knows is logged and answered with
a JSON 500 that names nothing internal: a last resort, never the plan.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorMap = Callable[[Exception], "ApiError | None"]

# Codes for the statuses aiohttp itself raises (routing, body size).
_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


class ErrorBody(BaseModel):
    """The body of every error answer (some add fields, e.g. `needed`/`free` on a 503)."""

    model_config = ConfigDict(extra="allow", title="Error")
    error: str = Field(description="machine-readable code, e.g. backup_not_found")
    message: str = Field(description="one line for a person")


class ApiError(Exception):
    """Raised by handlers; rendered as {"error", "message"} with `status`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: object,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, self.headers, **self.extra)


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    **extra: object,
) -> web.Response:
    body = {"error": code, "message": message, **extra}
    return web.json_response(body, status=status, headers=headers)


def one_line(text: str, limit: int = 200) -> str:
    """Client-supplied text made safe to echo: one line, bounded."""
    flat = "".join(c if c.isprintable() else "?" for c in text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    # Keep Allow on a 405: clients (and schemathesis) read it.
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    code = _HTTP_CODES.get(exc.status, "http_error")
    reason = exc.reason or HTTPStatus(exc.status).phrase
    return error_response(exc.status, code, reason, headers)


def error_middleware(domain_errors: ErrorMap):
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _from_http_exception(exc)
        except Exception as exc:
            mapped = domain_errors(exc)
            if mapped is not None:
                return mapped.response()
            log.exception("%s %s failed", request.method, request.path)
            return error_response(500, "internal_error", "internal error (see the server log)")

    return errors
