"""Runs: read one, read its journal, cancel it."""

from __future__ import annotations

import uuid

from flask import Blueprint

from orchestrator.domain.enums import Role
from orchestrator.store import journal, runs
from web.api import operation
from web.auth import require_project
from web.state import state

bp = Blueprint("runs", __name__, url_prefix="/api/runs")


def _load_visible_run(session, run_id: uuid.UUID, needed: Role):  # type: ignore[no-untyped-def]
    run = runs.load_run(session, run_id)
    require_project(session, run.project_id, needed, resource=f"run {run_id}")
    return run


@operation(bp, "GET", "/<uuid:run_id>", summary="Get a run")
def get_run(run_id: uuid.UUID):
    with state().db.transaction() as session:
        return {"run": runs.serialize_run(_load_visible_run(session, run_id, Role.VIEWER))}


@operation(bp, "GET", "/<uuid:run_id>/steps", summary="The run's journal")
def list_steps(run_id: uuid.UUID):
    with state().db.transaction() as session:
        _load_visible_run(session, run_id, Role.VIEWER)
        return {"steps": [journal.serialize_step(step) for step in journal.list_steps(session, run_id)]}


@operation(bp, "POST", "/<uuid:run_id>/cancel", summary="Cancel a run and its unfinished children")
def cancel_run(run_id: uuid.UUID):
    with state().db.transaction() as session:
        _load_visible_run(session, run_id, Role.MEMBER)
        run = runs.cancel_run(session, run_id)
        following = runs.next_queued_run(session, run.session_id, run.kind)
        body = {"run": runs.serialize_run(run)}
    if following is not None:
        state().queue.enqueue_run(following.kind, following.id)  # the next run in the session may start
    return body
