"""Public endpoints: `/health` for load balancers and operators, and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from orchestrator import __version__, services
from web.api import build_openapi, operation
from web.state import state

bp = Blueprint("health", __name__)

WEBSOCKET_PATHS = {
    "/ws/sessions/{session_id}": {"get": {
        "summary": "WebSocket: replay a session's events after `since`, then stream live ones",
        "operationId": "websocket_session_events", "tags": ["websocket"],
        "parameters": [{"name": "session_id", "in": "path", "required": True,
                        "schema": {"type": "string", "format": "uuid"}},
                       {"name": "since", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}}],
        "description": "Authenticate with 'Authorization: Bearer <token>' or the subprotocols "
                       "['boocode.v1', 'bearer.<token>']. Each text frame is one event as JSON with its `seq`.",
        "security": [{"bearer": []}],
        "responses": {"101": {"description": "switching protocols"}},
    }},
}


@operation(bp, "GET", "/health", summary="Reachability of Postgres, Redis and workers", public=True)
def health():
    checks: dict[str, dict[str, object]] = {}
    try:
        with state().db.transaction() as session:
            session.execute(text("SELECT 1"))
        checks["postgres"] = {"ok": True}
    except Exception as error:
        checks["postgres"] = {"ok": False, "error": type(error).__name__}
    try:
        state().redis.ping()
        workers = services.live_workers(state().redis, state().settings)
        checks["redis"] = {"ok": True}
        checks["workers"] = {"ok": bool(workers), "count": len(workers), "names": workers}
    except Exception as error:
        checks["redis"] = {"ok": False, "error": type(error).__name__}
        checks["workers"] = {"ok": False, "count": 0, "names": []}
    healthy = all(check["ok"] for check in checks.values())
    response = jsonify({"status": "ok" if healthy else "degraded", "version": __version__, "checks": checks})
    response.status_code = 200 if healthy else 503
    return response


@operation(bp, "GET", "/api/openapi.json", summary="This API's OpenAPI document", public=True)
def openapi():
    return build_openapi(__version__, WEBSOCKET_PATHS)
