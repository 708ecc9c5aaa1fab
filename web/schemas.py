"""JSON Schemas for request bodies and query strings, shared by validation and the OpenAPI document.

Integers compared with or stored in a database column carry that column's range (`SEQ` and the
span `cursor` a bigint's, `TURN` an integer's), so an out-of-range value is a 422 here rather than
a database error; `web/inputs.py` adds
the floor (no NUL, no lone surrogate, nothing past bigint) under every field.
"""

from __future__ import annotations

from typing import Any

from web.inputs import BIGINT_MAX, INTEGER_MAX

JSON = dict[str, Any]

NAME: JSON = {"type": "string", "minLength": 1, "maxLength": 200}
LIMIT: JSON = {"type": "integer", "minimum": 1, "maximum": 500}
SEQ: JSON = {"type": "integer", "minimum": 0, "maximum": BIGINT_MAX}
TURN: JSON = {"type": "integer", "minimum": 0, "maximum": INTEGER_MAX}
ROLE: JSON = {"type": "string", "enum": ["owner", "member", "viewer"]}
RUN_STATUS: JSON = {"type": "string", "enum": ["queued", "running", "waiting", "completed", "completed_with_failures",
                                               "failed", "cancelled", "interrupted"]}


def strict(properties: JSON, required: list[str] | None = None) -> JSON:
    return {"type": "object", "properties": properties, "required": required or [], "additionalProperties": False}


CREATE_USER = strict({"username": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$"},
                      "display_name": NAME, "is_admin": {"type": "boolean"}}, ["username"])
CREATE_TOKEN = strict({"name": NAME}, ["name"])
LOGIN = strict({"username": {"type": "string", "minLength": 1, "maxLength": 200},
                "password": {"type": "string", "minLength": 1, "maxLength": 1024}}, ["username", "password"])
SET_PASSWORD = strict({"password": {"type": "string", "minLength": 8, "maxLength": 1024}}, ["password"])
CREATE_PROJECT = strict({"name": NAME, "root_path": {"type": "string", "minLength": 1, "maxLength": 4096}},
                        ["name", "root_path"])
SET_MEMBER = strict({"role": ROLE}, ["role"])
ADD_MEMBER = strict({"username": {"type": "string", "minLength": 1, "maxLength": 200}, "role": ROLE},
                    ["username", "role"])
DEFAULT_SESSION_TITLE = "New session"  # replaced by the first message's words (web/blueprints/sessions.py)
SESSION_TITLE: JSON = {"type": "string", "minLength": 1, "maxLength": 300}
CREATE_SESSION = strict({"title": {**SESSION_TITLE, "default": DEFAULT_SESSION_TITLE}})
RENAME_SESSION = strict({"title": {**SESSION_TITLE, "pattern": "\\S"}}, ["title"])
PART: JSON = {"type": "object", "properties": {"type": {"type": "string", "enum": ["text", "image"]}},
              "required": ["type"]}
POST_MESSAGE: JSON = {
    "type": "object",
    "properties": {"text": {"type": "string", "minLength": 1}, "parts": {"type": "array", "items": PART,
                                                                        "minItems": 1, "maxItems": 32}},
    "additionalProperties": False,
    "oneOf": [{"required": ["text"]}, {"required": ["parts"]}],
}
SPAN_QUERY: JSON = {
    "cursor": {"type": "integer", "minimum": 0, "maximum": BIGINT_MAX,
               "description": "the `next_cursor` of the previous page"},
    "limit": {"type": "integer", "minimum": 1, "maximum": 200},
    "kind": {"type": "string", "enum": ["run", "turn", "model_call", "tool_call"]},
    "status": {"type": "string", "enum": ["running", "ok", "error", "interrupted", "cancelled"]},
    "turn": TURN,
    "tool": {"type": "string", "minLength": 1, "maxLength": 100},
}
POLICY = strict({"rules": {"type": "array", "maxItems": 200, "items": {"type": "object"}}}, ["rules"])
DECISION = strict({"decision": {"type": "string", "enum": ["approve", "deny"]},
                   "reason": {"type": "string", "maxLength": 2000}}, ["decision"])
APPROVAL_STATUS: JSON = {"type": "string", "enum": ["pending", "approved", "denied"]}
CREATE_PROBE = strict({"steps": {"type": "integer", "minimum": 1, "maximum": 10000},
                       "step_seconds": {"type": "number", "minimum": 0, "maximum": 60}})
WORKFLOW_CAPS = strict({"concurrency": {"type": "integer", "minimum": 1, "maximum": 256},
                        "max_agents": {"type": "integer", "minimum": 1, "maximum": 100000},
                        "max_tokens": {"type": "integer", "minimum": 1, "maximum": BIGINT_MAX}})
RUN_WORKFLOW: JSON = {
    "type": "object",
    "properties": {"name": NAME, "path": {"type": "string", "minLength": 1, "maxLength": 4096},
                   "script": {"type": "string", "minLength": 1}, "args": {}, "caps": WORKFLOW_CAPS,
                   "dry_run": {"type": "boolean"}},
    "additionalProperties": False,
    "oneOf": [{"required": ["name"]}, {"required": ["path"]}, {"required": ["script"]}],
}
RESUME_WORKFLOW = strict({"script": {"type": "string", "minLength": 1}})
VALIDATE_FLOW = strict({"text": {"type": "string", "minLength": 1}}, ["text"])
START_FLOW = strict({"input": {}, "session_id": {"type": "string", "format": "uuid",
                                                 "pattern": "^[0-9a-fA-F-]{36}$"}})
RERUN_FLOW = strict({"from_step": {"type": "string", "minLength": 1, "maxLength": 200}, "input": {}}, ["from_step"])
TRIGGER_FLOW = strict({"input": {}})
ESTIMATE_FLOW = strict({"input": {}})
