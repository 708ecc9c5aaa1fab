"""Authentication for every route and socket, and the project access checks views use.

A request carries `Authorization: Bearer <token>`; a WebSocket may instead offer the token as a
subprotocol `bearer.<token>` (browsers cannot set headers on sockets) next to `boocode.v1`.
A browser that signed in with a password (`POST /api/auth/login`) carries the session cookie
instead (HttpOnly, SameSite=Strict). Requests authenticated by the cookie are checked against
cross-site forgery: a state-changing request must repeat the `boocode_csrf` cookie's value in the
`X-CSRF-Token` header (which another site cannot read), and a WebSocket handshake must come from
this server's own origin.
Routes declared `public=True` (health, the OpenAPI document, sign-in, the UI) skip authentication;
nothing else does.
"""

from __future__ import annotations

import secrets
import uuid
from urllib.parse import urlparse

from flask import Flask, current_app, g, request
from sqlalchemy.orm import Session

from orchestrator.domain.enums import Role
from orchestrator.store import projects, runs, users
from orchestrator.store import sessions as chat_sessions
from orchestrator.store.models import ChatSession, Project, Run, User
from web.errors import HttpError
from web.state import state

WS_PROTOCOL = "boocode.v1"
WS_TOKEN_PREFIX = "bearer."
SESSION_COOKIE = "boocode_session"
CSRF_COOKIE = "boocode_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def presented_token() -> str | None:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise HttpError(401, "unauthenticated", "use 'Authorization: Bearer <token>'")
        return value.strip()
    for offered in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        offered = offered.strip()
        if offered.startswith(WS_TOKEN_PREFIX):
            return offered[len(WS_TOKEN_PREFIX):]
    return None


def authenticate() -> None:
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None or getattr(view, "public", False) or request.endpoint == "static":  # the UI's files are public
        return
    token = presented_token()
    if token is None and request.cookies.get(SESSION_COOKIE):
        token = request.cookies[SESSION_COOKIE]
        check_cross_site()
    if token is None:
        raise HttpError(401, "unauthenticated", "this route needs an API token: send 'Authorization: Bearer <token>' "
                        "(create one with `boocode token create`), or sign in")
    with state().db.transaction() as session:
        user = users.authenticate_token(session, token)
    if user is None:
        raise HttpError(401, "unauthenticated", "the API token is unknown or revoked, or its browser "
                        "session ended; sign in again or create a new token")
    g.user = user


def check_cross_site() -> None:
    """A cookie-authenticated request must prove it comes from our own pages."""
    if request.path.startswith("/ws/"):
        origin = urlparse(request.headers.get("Origin", ""))
        if origin.netloc != request.host:
            raise HttpError(403, "cross_site_refused", "a signed-in WebSocket must be opened from this server's pages",
                            [{"path": "Origin", "message": f"{origin.netloc or 'none'} is not {request.host}"}])
        return
    if request.method in SAFE_METHODS:
        return
    expected = request.cookies.get(CSRF_COOKIE, "")
    offered = request.headers.get(CSRF_HEADER, "")
    # compared as bytes: compare_digest refuses non-ASCII text, and headers may hold any latin-1 byte
    if not expected or not secrets.compare_digest(expected.encode(), offered.encode()):
        raise HttpError(403, "csrf_failed", f"a signed-in browser request that changes something must send the "
                        f"{CSRF_COOKIE} cookie's value in the {CSRF_HEADER} header")


def init_auth(app: Flask) -> None:
    app.before_request(authenticate)


def current_user() -> User:
    return g.user


def require_admin() -> User:
    user = current_user()
    if not user.is_admin:
        raise HttpError(403, "forbidden", "only server admins can do this")
    return user


def require_project(session: Session, project_id: uuid.UUID, needed: Role, *,
                    resource: str | None = None) -> tuple[Project, Role]:
    return projects.require_role(session, current_user(), project_id, needed, resource=resource)


def load_visible_session(session: Session, session_id: uuid.UUID, needed: Role) -> ChatSession:
    """The session, if the caller has `needed` in its project; a non-member learns nothing (404)."""
    chat = chat_sessions.load_session(session, session_id)
    require_project(session, chat.project_id, needed, resource=f"session {session_id}")
    return chat


def load_visible_run(session: Session, run_id: uuid.UUID, needed: Role) -> Run:
    """The run, if the caller has `needed` in its project; a non-member learns nothing (404)."""
    run = runs.load_run(session, run_id)
    require_project(session, run.project_id, needed, resource=f"run {run_id}")
    return run
