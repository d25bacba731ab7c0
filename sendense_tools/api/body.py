"""Request bodies and query strings into pydantic models, with 4xx for anything bad.

pydantic's own JSON parser reads the body: it bounds nesting depth and number
size itself, so a 5,000-digit integer or 100,000 `[` is a 400, not a crash of
Python's json module.
"""

from __future__ import annotations

import codecs
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from sendense_tools.api.errors import ApiError, one_line

M = TypeVar("M", bound=BaseModel)
# JSON is UTF-8 (RFC 8259); ASCII is a subset of it.
_UTF8_NAMES = frozenset({"utf-8", "ascii"})


def _check_charset(request: web.Request) -> None:
    charset = request.charset
    if charset is None:
        return
    try:
        name = codecs.lookup(charset).name
    except LookupError:
        name = None
    if name not in _UTF8_NAMES:
        raise ApiError(
            415, "unsupported_media_type", f"charset {one_line(charset, 40)!r}: send UTF-8 JSON"
        )


def _where(loc: tuple) -> str:
    return one_line(".".join(str(x) for x in loc), 80) or "body"


async def read_model(request: web.Request, model: type[M]) -> M:
    """The JSON body as `model`: 415 for a non-UTF-8 charset, 400 bad JSON, 422 bad fields."""
    _check_charset(request)
    raw = await request.read()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        if first["type"] == "json_invalid":
            why = first["msg"].removeprefix("Invalid JSON: ")
            raise ApiError(400, "bad_json", f"request body is not valid JSON: {why}") from None
        if first["type"] == "model_type" and not first["loc"]:
            raise ApiError(400, "bad_json", "request body must be a JSON object") from None
        raise ApiError(422, "invalid", f"{_where(first['loc'])}: {first['msg']}") from None


def read_query(request: web.Request, model: type[M]) -> M:
    """The query string as `model` (unknown parameters are ignored); 400 for bad values."""
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        raise ApiError(400, "bad_query", f"{_where(first['loc'])}: {first['msg']}") from None
