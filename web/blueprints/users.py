"""Users (admin) and API tokens (each user's own; admins may mint one for any user)."""

from __future__ import annotations

import uuid

from flask import Blueprint

from orchestrator.store import users
from web import schemas
from web.api import operation
from web.auth import current_user, require_admin
from web.state import state

bp = Blueprint("users", __name__, url_prefix="/api")


@operation(bp, "GET", "/me", summary="The authenticated user")
def me():
    return {"user": users.serialize_user(current_user())}


@operation(bp, "GET", "/users", summary="List users (admin)")
def list_users():
    require_admin()
    with state().db.transaction() as session:
        return {"users": [users.serialize_user(user) for user in users.list_users(session)]}


@operation(bp, "POST", "/users", summary="Create a user (admin)", body=schemas.CREATE_USER, status=201)
def create_user(body):
    require_admin()
    with state().db.transaction() as session:
        user = users.create_user(session, body["username"], display_name=body.get("display_name"),
                                 is_admin=body.get("is_admin", False))
        return {"user": users.serialize_user(user)}, 201


@operation(bp, "POST", "/users/<uuid:user_id>/tokens", summary="Create a token for a user (admin)",
           body=schemas.CREATE_TOKEN, status=201)
def create_user_token(user_id: uuid.UUID, body):
    require_admin()
    with state().db.transaction() as session:
        users.load_user(session, user_id)
        token, plain = users.create_token(session, user_id, body["name"])
        return {"token": plain, "details": users.serialize_token(token)}, 201


@operation(bp, "GET", "/tokens", summary="List my tokens")
def list_tokens():
    with state().db.transaction() as session:
        return {"tokens": [users.serialize_token(token) for token in users.list_tokens(session, current_user().id)]}


@operation(bp, "POST", "/tokens", summary="Create a token for myself", body=schemas.CREATE_TOKEN, status=201)
def create_token(body):
    with state().db.transaction() as session:
        token, plain = users.create_token(session, current_user().id, body["name"])
        return {"token": plain, "details": users.serialize_token(token)}, 201


@operation(bp, "DELETE", "/tokens/<uuid:token_id>", summary="Revoke one of my tokens")
def revoke_token(token_id: uuid.UUID):
    with state().db.transaction() as session:
        token = users.revoke_token(session, current_user().id, token_id)
        return {"token": users.serialize_token(token)}
