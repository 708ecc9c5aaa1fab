"""Runs: read one, read its journal, cancel it."""

from __future__ import annotations

import uuid

from flask import Blueprint

from orchestrator import lifecycle
from orchestrator.domain.enums import Role
from orchestrator.store import journal, runs, subagents
from orchestrator.store import sessions as chat_sessions
from web import schemas
from web.api import operation
from web.auth import load_visible_run
from web.state import state

bp = Blueprint("runs", __name__, url_prefix="/api/runs")


@operation(bp, "GET", "/<uuid:run_id>", summary="Get a run")
def get_run(run_id: uuid.UUID):
    with state().db.transaction() as session:
        return {"run": runs.serialize_run(load_visible_run(session, run_id, Role.VIEWER))}


@operation(bp, "GET", "/<uuid:run_id>/steps", summary="The run's journal")
def list_steps(run_id: uuid.UUID):
    with state().db.transaction() as session:
        load_visible_run(session, run_id, Role.VIEWER)
        return {"steps": [journal.serialize_step(step) for step in journal.list_steps(session, run_id)]}


@operation(bp, "POST", "/<uuid:run_id>/cancel", summary="Cancel a run and its unfinished children")
def cancel_run(run_id: uuid.UUID):
    with state().db.transaction() as session:
        load_visible_run(session, run_id, Role.MEMBER)
        run, going = lifecycle.cancel(session, run_id, subagents.Limits.from_settings(state().settings))
        body = {"run": runs.serialize_run(run)}
        to_start = [(started.kind, started.id) for started in going]
    for kind, started_id in to_start:  # its workflow's next tick, the session's next run, freed slots
        state().queue.enqueue_run(kind, started_id)
    return body


@operation(bp, "GET", "/<uuid:run_id>/messages",
           summary="The run's own messages (e.g. one workflow agent's transcript)",
           query={"after": schemas.SEQ, "limit": schemas.LIMIT})
def list_run_messages(run_id: uuid.UUID, query):
    with state().db.transaction() as session:
        run = load_visible_run(session, run_id, Role.VIEWER)
        found = chat_sessions.list_messages(session, run.session_id, after_seq=query.get("after", 0),
                                            limit=query.get("limit", 200), run_id=run.id)
        return {"messages": [chat_sessions.serialize_message(message) for message in found]}
