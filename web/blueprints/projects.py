"""Projects and their members. Creating a project (a directory on the server) is for admins."""

from __future__ import annotations

import uuid

from flask import Blueprint

from orchestrator import providers
from orchestrator.domain.enums import Role
from orchestrator.errors import NotFoundError
from orchestrator.store import projects, runs, users
from orchestrator.store import sessions as chat_sessions
from web import schemas
from web.api import operation
from web.auth import current_user, require_admin, require_project
from web.state import state

bp = Blueprint("projects", __name__, url_prefix="/api/projects")


@operation(bp, "GET", "", summary="List the projects I belong to")
def list_projects():
    with state().db.transaction() as session:
        return {"projects": [projects.serialize_project(project, role)
                             for project, role in projects.list_projects_for(session, current_user())]}


@operation(bp, "POST", "", summary="Register a project directory (admin)", body=schemas.CREATE_PROJECT, status=201)
def create_project(body):
    user = require_admin()
    with state().db.transaction() as session:
        project = projects.create_project(session, body["name"], body["root_path"], user)
        return {"project": projects.serialize_project(project, Role.OWNER)}, 201


@operation(bp, "GET", "/<uuid:project_id>", summary="Get a project")
def get_project(project_id: uuid.UUID):
    with state().db.transaction() as session:
        project, role = require_project(session, project_id, Role.VIEWER)
        return {"project": projects.serialize_project(project, role)}


@operation(bp, "GET", "/<uuid:project_id>/members", summary="List a project's members")
def list_members(project_id: uuid.UUID):
    with state().db.transaction() as session:
        require_project(session, project_id, Role.VIEWER)
        return {"members": [projects.serialize_member(member, user)
                            for member, user in projects.list_members(session, project_id)]}


@operation(bp, "POST", "/<uuid:project_id>/members", summary="Add a member by user name, or change their role (owner)",
           body=schemas.ADD_MEMBER)
def add_member(project_id: uuid.UUID, body):
    with state().db.transaction() as session:
        require_project(session, project_id, Role.OWNER)
        user = users.find_user_by_name(session, body["username"])
        if user is None:
            raise NotFoundError(f"there is no user named {body['username']!r}")
        member = projects.set_member(session, project_id, user.id, Role(body["role"]))
        return {"member": projects.serialize_member(member, user)}


@operation(bp, "PUT", "/<uuid:project_id>/members/<uuid:user_id>", summary="Add a member or change a role (owner)",
           body=schemas.SET_MEMBER)
def set_member(project_id: uuid.UUID, user_id: uuid.UUID, body):
    with state().db.transaction() as session:
        require_project(session, project_id, Role.OWNER)
        member = projects.set_member(session, project_id, user_id, Role(body["role"]))
        return {"member": projects.serialize_member(member, users.load_user(session, user_id))}


@operation(bp, "DELETE", "/<uuid:project_id>/members/<uuid:user_id>", summary="Remove a member (owner)")
def remove_member(project_id: uuid.UUID, user_id: uuid.UUID):
    with state().db.transaction() as session:
        require_project(session, project_id, Role.OWNER)
        projects.remove_member(session, project_id, user_id)
        return {"removed": str(user_id)}


@operation(bp, "GET", "/<uuid:project_id>/sessions", summary="List a project's sessions",
           query={"limit": schemas.LIMIT})
def list_sessions(project_id: uuid.UUID, query):
    with state().db.transaction() as session:
        require_project(session, project_id, Role.VIEWER)
        found = chat_sessions.list_sessions(session, project_id, limit=query.get("limit", 100))
        states = chat_sessions.activity(session, [chat.id for chat in found])
        return {"sessions": [{**chat_sessions.serialize_session(chat), "activity": states[chat.id]}
                             for chat in found]}


@operation(bp, "POST", "/<uuid:project_id>/sessions", summary="Start a session", body=schemas.CREATE_SESSION,
           status=201)
def create_session(project_id: uuid.UUID, body):
    with state().db.transaction() as session:
        require_project(session, project_id, Role.MEMBER)
        title = body.get("title", schemas.DEFAULT_SESSION_TITLE)
        chat = chat_sessions.create_session(session, project_id, title, current_user().id)
        return {"session": chat_sessions.serialize_session(chat)}, 201


@operation(bp, "GET", "/<uuid:project_id>/runs", summary="List a project's runs, newest first",
           query={"status": schemas.RUN_STATUS, "limit": schemas.LIMIT})
def list_runs(project_id: uuid.UUID, query):
    with state().db.transaction() as session:
        require_project(session, project_id, Role.VIEWER)
        found = runs.list_runs(session, project_id=project_id, status=query.get("status"),
                               limit=query.get("limit", 50))
        return {"runs": [runs.serialize_run(run) for run in found]}


@operation(bp, "GET", "/<uuid:project_id>/provider", summary="The model provider the project's runs use")
def get_provider(project_id: uuid.UUID):
    with state().db.transaction() as session:
        project, _ = require_project(session, project_id, Role.VIEWER)
        return providers.public_view(project.provider, providers.server_provider(state().settings))


@operation(bp, "PUT", "/<uuid:project_id>/provider", summary="Give the project its own model provider (owner)",
           body=providers.PROVIDER_SCHEMA)
def set_provider(project_id: uuid.UUID, body):
    with state().db.transaction() as session:
        project, _ = require_project(session, project_id, Role.OWNER)
        project.provider = providers.store_config(body, state().settings.secret_key, project.provider)
        return providers.public_view(project.provider, None)


@operation(bp, "DELETE", "/<uuid:project_id>/provider", summary="Go back to the server's provider (owner)")
def clear_provider(project_id: uuid.UUID):
    with state().db.transaction() as session:
        project, _ = require_project(session, project_id, Role.OWNER)
        project.provider = None
        return providers.public_view(None, providers.server_provider(state().settings))
