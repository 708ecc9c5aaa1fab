"""Declaring API operations once: the route, its input schema and its OpenAPI entry.

    @operation(bp, "POST", "/projects", summary="Create a project", body=PROJECT_SCHEMA, status=201)
    def create_project(body): ...

The decorator registers the Flask route, checks every path value, query value and JSON body for
what the database cannot hold (`web/inputs.py`), validates the body and query string against the
declared JSON Schemas before the view runs (so bad input changes nothing), and records the
operation for the OpenAPI document. Because the same declaration drives routing, validation and
the document, they cannot drift apart; a test compares the document with Flask's URL map.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from flask import Blueprint, request
from jsonschema import Draft202012Validator

from web.errors import HttpError
from web.inputs import check_path, check_query, check_value, parse_json_body

JSON = dict[str, Any]


@dataclass
class Operation:
    blueprint: Blueprint
    method: str
    rule: str
    summary: str
    endpoint: str
    body: JSON | None = None
    query: dict[str, JSON] = field(default_factory=dict)
    status: int = 200
    public: bool = False
    tag: str = ""
    raw_body: list[str] | None = None  # media types of a non-JSON body the view reads itself
    body_optional: bool = False  # no body at all reads as {}

    @property
    def path(self) -> str:
        return (self.blueprint.url_prefix or "") + self.rule


OPERATIONS: list[Operation] = []


def operation(bp: Blueprint, method: str, rule: str, *, summary: str, body: JSON | None = None,
              query: dict[str, JSON] | None = None, status: int = 200, public: bool = False,
              raw_body: list[str] | None = None, body_optional: bool = False) -> Callable:
    body_validator = Draft202012Validator(body) if body is not None else None
    query_schema = {"type": "object", "properties": query or {}, "additionalProperties": False}
    query_validator = Draft202012Validator(query_schema)

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(**path_args: Any) -> Any:
            check_path(path_args)
            check_query(request.args.lists())
            if body_validator is not None:
                empty = not request.get_data(cache=True).strip()
                path_args["body"] = {} if body_optional and empty else _read_body(body_validator)
            if query:
                path_args["query"] = _read_query(query, query_validator)
            return view(**path_args)

        wrapper.public = public  # type: ignore[attr-defined]  # a function attribute; mypy does not model them
        bp.add_url_rule(rule, endpoint=view.__name__, view_func=wrapper, methods=[method])
        OPERATIONS.append(Operation(blueprint=bp, method=method, rule=rule, summary=summary,
                                    endpoint=f"{bp.name}.{view.__name__}", body=body, query=query or {},
                                    status=status, public=public, tag=bp.name, raw_body=raw_body,
                                    body_optional=body_optional))
        return wrapper

    return decorate


def _read_body(validator: Draft202012Validator) -> JSON:
    if request.mimetype != "application/json":
        raise HttpError(415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json")
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise HttpError(400, "invalid_json", "the request body is empty; send a JSON object")
    body = parse_json_body(raw)
    _raise_if_invalid(validator, body)
    return body


def _read_query(spec: dict[str, JSON], validator: Draft202012Validator) -> JSON:
    values: JSON = {}
    for name, raw in request.args.items():
        schema = spec.get(name, {})
        values[name] = _coerce(raw, schema.get("type"))
    check_value(values, "query")
    _raise_if_invalid(validator, values, where="query")
    return values


def _coerce(raw: str, kind: str | None) -> Any:
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            return raw
    return raw


def _raise_if_invalid(validator: Draft202012Validator, value: Any, where: str = "body") -> None:
    errors = sorted(validator.iter_errors(value), key=lambda error: list(error.absolute_path))
    if errors:
        details = [{"path": "/".join(str(part) for part in error.absolute_path) or where, "message": error.message}
                   for error in errors[:20]]
        raise HttpError(422, "validation_failed", f"the request {where} is invalid: {details[0]['message']}",
                        details)


def openapi_path(flask_rule: str) -> str:
    """`/runs/<uuid:run_id>` -> `/runs/{run_id}`."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", flask_rule)


ERROR_SCHEMA: JSON = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "details": {}},
        "required": ["code", "message"]}},
    "required": ["error"],
}


def build_openapi(version: str, extra_paths: dict[str, JSON] | None = None) -> JSON:
    paths: dict[str, JSON] = {}
    for op in OPERATIONS:
        path = openapi_path(op.path)
        entry: JSON = {
            "summary": op.summary,
            "operationId": op.endpoint.replace(".", "_"),
            "tags": [op.tag],
            "responses": {str(op.status): {"description": "success"},
                          "default": {"description": "error", "content": {
                              "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
        }
        parameters = [{"name": name, "in": "path", "required": True,
                       "schema": {"type": "string", "format": "uuid"} if name.endswith("_id") else {"type": "string"}}
                      for name in re.findall(r"{([^}]+)}", path)]
        parameters += [{"name": name, "in": "query", "required": False, "schema": schema}
                       for name, schema in op.query.items()]
        if parameters:
            entry["parameters"] = parameters
        if op.body is not None:
            entry["requestBody"] = {"required": not op.body_optional,
                                    "content": {"application/json": {"schema": op.body}}}
        if op.raw_body is not None:
            binary = {"schema": {"type": "string", "format": "binary"}}
            entry["requestBody"] = {"required": True, "content": {media: binary for media in op.raw_body}}
        entry["security"] = [] if op.public else [{"bearer": []}]
        paths.setdefault(path, {})[op.method.lower()] = entry
    for path, item in (extra_paths or {}).items():
        paths.setdefault(path, {}).update(item)
    return {
        "openapi": "3.1.0",
        "info": {"title": "BooCode Orchestrator API", "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": {"Error": ERROR_SCHEMA}},
    }
