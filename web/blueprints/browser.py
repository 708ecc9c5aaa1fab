"""Signing in from a browser, passwords, and the web UI's page.

Signing in creates an API token named "browser session" and hands it over as an HttpOnly,
SameSite=Strict cookie, with a second, readable cookie holding the CSRF value the page repeats in
`X-CSRF-Token` (see web/auth.py). The token ends on the server `browser_session_seconds` after
sign-in or after `browser_session_idle_seconds` unused, and signing out revokes it, so a copied
cookie stops working. Cookies are `Secure` whenever the request is https (directly, or through a
trusted proxy: web/proxies.py). Failed sign-ins are throttled (web/throttle.py).
"""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

from flask import Blueprint, make_response, request, send_file

from orchestrator.store import users
from web import schemas
from web.api import operation
from web.auth import CSRF_COOKIE, SESSION_COOKIE, current_user, require_admin
from web.errors import HttpError
from web.state import state
from web.throttle import LoginThrottle

bp = Blueprint("browser", __name__)
STATIC = Path(__file__).resolve().parent.parent / "static"


@operation(bp, "POST", "/api/auth/login", summary="Sign in with a password; sets the browser session cookie",
           body=schemas.LOGIN, public=True)
def login(body):
    settings = state().settings
    throttle = LoginThrottle(state().redis, settings)
    address = request.remote_addr or "unknown"
    throttle.check(body["username"], address)
    with state().db.transaction() as session:
        user = users.check_password(session, body["username"], body["password"])
        if user is None:
            throttle.record_failure(body["username"], address)
            raise HttpError(401, "invalid_credentials", "unknown user or wrong password")
        _, plain = users.create_token(session, user.id, users.BROWSER_TOKEN_NAME,
                                      lifetime_seconds=settings.browser_session_seconds,
                                      idle_seconds=settings.browser_session_idle_seconds)
        payload = {"user": users.serialize_user(user)}
    throttle.record_success(body["username"], address)
    response = make_response(payload)
    secure = request.is_secure
    max_age = int(settings.browser_session_seconds)
    response.set_cookie(SESSION_COOKIE, plain, max_age=max_age, httponly=True, samesite="Strict", secure=secure)
    response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(24), max_age=max_age, httponly=False, samesite="Strict",
                        secure=secure)
    return response


@operation(bp, "POST", "/api/auth/logout", summary="Sign out: revokes the browser session and clears its cookies",
           status=204)
def logout():
    plain = request.cookies.get(SESSION_COOKIE)
    if plain:
        with state().db.transaction() as session:
            users.revoke_plain_token(session, plain)
    response = make_response("", 204)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="Strict", secure=request.is_secure)
    response.delete_cookie(CSRF_COOKIE, samesite="Strict", secure=request.is_secure)
    return response


@operation(bp, "PUT", "/api/users/<uuid:user_id>/password", summary="Set a user's password (admin, or the user)",
           body=schemas.SET_PASSWORD, status=204)
def set_password(user_id: uuid.UUID, body):
    if current_user().id != user_id:
        require_admin()
    with state().db.transaction() as session:
        users.set_password(session, user_id, body["password"])
    return "", 204


@operation(bp, "GET", "/", summary="The web UI", public=True)
def index():
    return send_file(STATIC / "index.html", mimetype="text/html", max_age=0)
