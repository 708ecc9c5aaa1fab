"""Public endpoints: `/health` for load balancers and operators, and the OpenAPI document.

`/health` must stay cheap and answerable even when WebSockets are at their cap: it never waits on a
socket, and the per-process socket cap (web/access.py) keeps threads free for it.
"""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from orchestrator import __version__, services
from web.access import process_socket_limit
from web.api import build_openapi, operation
from web.state import state

bp = Blueprint("health", __name__)

WEBSOCKET_PATHS = {
    "/ws/sessions/{session_id}": {"get": {
        "summary": "WebSocket: replay a session's events after `since`, then stream live ones",
        "operationId": "websocket_session_events", "tags": ["websocket"],
        "parameters": [{"name": "session_id", "in": "path", "required": True,
                        "schema": {"type": "string", "format": "uuid"}},
                       {"name": "since", "in": "query", "required": False,
                        "schema": {"type": "integer", "minimum": 0}}],
        "description": "Authenticate with 'Authorization: Bearer <token>' or the subprotocols "
                       "['boocode.v1', 'bearer.<token>']. Each text frame is one event as JSON with its `seq`. "
                       "The socket closes with 4401 (token revoked or expired, or signed out), 4403 (access to "
                       "the project removed) or 4404 (session gone) when access ends (docs/events.md).",
        "security": [{"bearer": []}],
        "responses": {"101": {"description": "switching protocols"},
                      "429": {"description": "too many open WebSockets for this user or this server process "
                                             "(BOOCODE_WS_MAX_PER_USER, BOOCODE_WS_MAX_PER_PROCESS)"}},
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
    sockets = {"open": state().sockets.open, "limit": process_socket_limit(state().settings)}  # this process only
    response = jsonify({"status": "ok" if healthy else "degraded", "version": __version__, "checks": checks,
                        "websockets": sockets})
    response.status_code = 200 if healthy else 503
    return response


@operation(bp, "GET", "/api/openapi.json", summary="This API's OpenAPI document", public=True)
def openapi():
    return build_openapi(__version__, WEBSOCKET_PATHS)
