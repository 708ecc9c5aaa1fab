"""Approval policies (per project) and approvals of dangerous tool calls."""

from __future__ import annotations

import uuid

from flask import Blueprint

from orchestrator.domain.enums import Role
from orchestrator.store import approvals, runs
from orchestrator.store.models import Project
from orchestrator.tools.policy import DEFAULT_RULES, validate_policy
from orchestrator.tools.registry import TOOLS
from web import schemas
from web.api import operation
from web.auth import current_user, load_visible_session, require_project
from web.state import state

bp = Blueprint("approvals", __name__, url_prefix="/api")


def _policy_body(project: Project) -> dict:
    return {"policy": project.approval_policy or {"rules": []}, "defaults": DEFAULT_RULES}


@operation(bp, "GET", "/projects/<uuid:project_id>/policy", summary="The project's tool approval policy")
def get_policy(project_id: uuid.UUID):
    with state().db.transaction() as session:
        project, _ = require_project(session, project_id, Role.VIEWER)
        return _policy_body(project)


@operation(bp, "PUT", "/projects/<uuid:project_id>/policy",
           summary="Replace the project's tool approval policy (owner)", body=schemas.POLICY)
def set_policy(project_id: uuid.UUID, body):
    policy = validate_policy(body, list(TOOLS))
    with state().db.transaction() as session:
        project, _ = require_project(session, project_id, Role.OWNER)
        project.approval_policy = policy
        return _policy_body(project)


@operation(bp, "GET", "/sessions/<uuid:session_id>/approvals", summary="Approvals requested in a session",
           query={"status": schemas.APPROVAL_STATUS, "limit": schemas.LIMIT})
def session_approvals(session_id: uuid.UUID, query):
    with state().db.transaction() as session:
        load_visible_session(session, session_id, Role.VIEWER)
        found = approvals.list_approvals(session, session_id=session_id, status=query.get("status"),
                                         limit=query.get("limit", 100))
        return {"approvals": [approvals.serialize_approval(approval) for approval in found]}


@operation(bp, "POST", "/approvals/<uuid:approval_id>/decision", summary="Approve or deny a waiting tool call",
           body=schemas.DECISION)
def decide(approval_id: uuid.UUID, body):
    with state().db.transaction() as session:
        approval = approvals.load_approval(session, approval_id)
        run = runs.load_run(session, approval.run_id)
        require_project(session, run.project_id, Role.MEMBER, resource=f"approval {approval_id}")
        approval, resumed = approvals.decide_approval(session, approval_id, body["decision"] == "approve",
                                                      current_user().id, body.get("reason"))
        response = {"approval": approvals.serialize_approval(approval), "run_resumed": resumed is not None}
    if resumed is not None:
        state().queue.enqueue_run(resumed.kind, resumed.id)
    return response
