"""Routes declared once: registered on the aiohttp app and described as OpenAPI 3.1.

The request and response schemas come from the pydantic models the handlers
validate with (`model_json_schema`), so the document cannot drift from the code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from sendense_tools.api.errors import ErrorBody, Handler

OPENAPI_PATH = "/api/v1/openapi.json"
REF = "#/components/schemas/{model}"
TEXT = "text/plain"
_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Operation:
    """One route: handler, inputs and every status it can answer."""

    method: str
    path: str
    handler: Handler
    summary: str
    # Success status -> response type (a model, list[Model], dict[str, Any]) or TEXT.
    ok: dict[int, Any]
    # Error statuses beyond the ones every operation of its kind can answer.
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    public: bool = False

    @property
    def error_statuses(self) -> list[int]:
        statuses = set(self.errors)
        if not self.public:
            statuses.add(401)
        if self.body is not None:
            statuses |= {400, 413, 415, 422}
        if self.query is not None:
            statuses.add(400)
        return sorted(statuses)


def _not_allowed(allowed: list[str]) -> Handler:
    async def method_not_allowed(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMethodNotAllowed(request.method, allowed)

    return method_not_allowed


def add_routes(app: web.Application, operations: list[Operation]) -> None:
    """Each operation on its path, and a 405 naming the documented methods for any other.

    The catch-all also keeps a literal path from falling through to a
    parameterised one: GET /api/v1/backup/start is a 405, not job "start".
    HEAD is not in the document, so it is not served either.
    """
    methods: dict[str, list[str]] = {}
    for op in operations:
        if op.method == "GET":
            app.router.add_get(op.path, op.handler, allow_head=False)
        else:
            app.router.add_route(op.method, op.path, op.handler)
        methods.setdefault(op.path, []).append(op.method)
    for path, allowed in methods.items():
        app.router.add_route("*", path, _not_allowed(sorted(allowed)))


def public_paths(operations: list[Operation]) -> frozenset[str]:
    return frozenset(op.path for op in operations if op.public)


class _Schemas:
    """Collects component schemas; `ref` returns the schema to put at a use site."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, kind: Any, mode: str) -> dict[str, Any]:
        schema = TypeAdapter(kind).json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
        self.components.update(schema.pop("$defs", {}))
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            name = schema.get("title", kind.__name__)
            self.components[name] = schema
            return {"$ref": REF.format(model=name)}
        return schema


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    # A query parameter is absent or a string, never JSON null.
    options = schema.get("anyOf")
    if options:
        kept = [s for s in options if s.get("type") != "null"]
        if len(kept) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            return {**kept[0], **rest}
    return schema


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1},
        }
        for name in _PATH_PARAM.findall(op.path)
    ]
    if op.query is not None:
        schema = op.query.model_json_schema()
        required = set(schema.get("required", []))
        for name, prop in schema["properties"].items():
            params.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "schema": _non_null(prop),
                }
            )
    return params


def _operation(op: Operation, schemas: _Schemas) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, kind in op.ok.items():
        if kind == TEXT:
            content = {TEXT: {"schema": {"type": "string"}}}
        else:
            content = {"application/json": {"schema": schemas.ref(kind, "serialization")}}
        responses[str(status)] = {"description": HTTPStatus(status).phrase, "content": content}
    error = {"application/json": {"schema": schemas.ref(ErrorBody, "serialization")}}
    for status in op.error_statuses:
        responses[str(status)] = {"description": HTTPStatus(status).phrase, "content": error}
    doc: dict[str, Any] = {
        "operationId": op.handler.__name__,
        "summary": op.summary,
        "responses": responses,
    }
    if params := _parameters(op):
        doc["parameters"] = params
    if op.body is not None:
        doc["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas.ref(op.body, "validation")}},
        }
    if op.public:
        doc["security"] = []
    return doc


def openapi_document(title: str, version: str, operations: list[Operation]) -> dict[str, Any]:
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
