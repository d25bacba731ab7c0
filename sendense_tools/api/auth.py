"""Bearer-token authentication for the aiohttp apps."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable

from aiohttp import web

from sendense_tools.api.errors import ApiError, Handler

# Who made the request: whatever `authenticate` returned for its token.
PRINCIPAL = web.RequestKey("principal", object)
# RFC 6750: a 401 names the scheme the client should use.
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _raw(text: str) -> bytes:
    # aiohttp hands undecodable header bytes over as surrogate escapes (e.g. ff fe).
    return text.encode("utf-8", "surrogateescape")


def token_matches(presented: str, tokens: Iterable[str]) -> str | None:
    """Return the first known token equal to `presented` (constant-time compare)."""
    given = _raw(presented)
    found = None
    for t in tokens:
        if hmac.compare_digest(given, _raw(t)):
            found = t
    return found


def auth_middleware(authenticate: Callable[[str], object | None], public_paths: frozenset[str]):
    """A bearer token on every path but `public_paths`; `request[PRINCIPAL]` names the caller."""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in public_paths:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "missing bearer token", headers=CHALLENGE)
        principal = authenticate(token.strip())
        if principal is None:
            raise ApiError(401, "unauthorized", "invalid bearer token", headers=CHALLENGE)
        request[PRINCIPAL] = principal
        return await handler(request)

    return auth
