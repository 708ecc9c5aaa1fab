"""Background subagents: list a session's, and retry one that ended. (Cancel is the run's cancel.)"""

from __future__ import annotations

import uuid

from flask import Blueprint

from orchestrator.domain.enums import Role, RunStatus
from orchestrator.errors import ConflictError, NotFoundError
from orchestrator.store import runs, subagents
from web import schemas
from web.api import operation
from web.auth import load_visible_run, load_visible_session
from web.state import state

bp = Blueprint("subagents", __name__, url_prefix="/api")


@operation(bp, "GET", "/sessions/<uuid:session_id>/subagents",
           summary="The session's background subagents, newest first: status, duration, tokens, result",
           query={"limit": schemas.LIMIT})
def list_subagents(session_id: uuid.UUID, query):
    with state().db.transaction() as session:
        load_visible_session(session, session_id, Role.VIEWER)
        found = subagents.list_for_session(session, session_id, limit=query.get("limit", 200))
        return {"subagents": [subagents.serialize(session, run) for run in found],
                "running": sum(1 for run in found if not RunStatus(run.status).is_terminal)}


@operation(bp, "GET", "/subagents/<uuid:task_id>", summary="One background subagent")
def get_subagent(task_id: uuid.UUID):
    with state().db.transaction() as session:
        run = _subagent(session, task_id, Role.VIEWER)
        return {"subagent": subagents.serialize(session, run)}


@operation(bp, "POST", "/subagents/<uuid:task_id>/retry", status=202,
           summary="Start a new subagent with the prompt and options of one that ended")
def retry_subagent(task_id: uuid.UUID):
    with state().db.transaction() as session:
        run = _subagent(session, task_id, Role.MEMBER)
        if not RunStatus(run.status).is_terminal:
            raise ConflictError(f"subagent {task_id} is still {run.status}; cancel it first to retry it",
                                details={"status": run.status})
        parent = runs.load_run(session, run.parent_id)
        retry, _ = subagents.spawn(session, parent, uuid.uuid4(), run.input["prompt"], run.input.get("spec") or {},
                                   follow_up=bool(run.input.get("follow_up")))
        retry.input = {**retry.input, "retry_of": str(run.id)}
        subagents.mark_delivered(session, run)  # superseded: its own result is no longer news
        body = {"subagent": subagents.serialize(session, retry)}
    state().queue.enqueue_run(retry.kind, retry.id)
    return body, 202


def _subagent(session, task_id: uuid.UUID, needed: Role):
    run = load_visible_run(session, task_id, needed)
    if run.kind != subagents.KIND:
        raise NotFoundError(f"run {task_id} is not a background subagent")
    return run
