"""Traces: spans of a session or run (keyset pages, filters) and their summary."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint

from orchestrator.domain.enums import Role
from orchestrator.store import spans
from web import schemas
from web.api import operation
from web.auth import load_visible_run, load_visible_session
from web.state import state

bp = Blueprint("traces", __name__, url_prefix="/api")


def _page(found: list, limit: int) -> dict[str, Any]:
    return {"spans": [spans.serialize_span(span) for span in found],
            "next_cursor": found[-1].position if len(found) == limit else None}


def _filters(query: dict[str, Any]) -> dict[str, Any]:
    return {"after": query.get("cursor", 0), "limit": query.get("limit", 100), "kind": query.get("kind"),
            "status": query.get("status"), "turn": query.get("turn"), "tool": query.get("tool")}


@operation(bp, "GET", "/sessions/<uuid:session_id>/spans", summary="A session's spans, oldest first (keyset pages)",
           query=schemas.SPAN_QUERY)
def session_spans(session_id: uuid.UUID, query):
    with state().db.transaction() as session:
        load_visible_session(session, session_id, Role.VIEWER)
        filters = _filters(query)
        return _page(spans.list_spans(session, session_id=session_id, **filters), filters["limit"])


@operation(bp, "GET", "/runs/<uuid:run_id>/spans", summary="A run's spans, oldest first (keyset pages)",
           query=schemas.SPAN_QUERY)
def run_spans(run_id: uuid.UUID, query):
    with state().db.transaction() as session:
        load_visible_run(session, run_id, Role.VIEWER)
        filters = _filters(query)
        return _page(spans.list_spans(session, run_id=run_id, **filters), filters["limit"])


@operation(bp, "GET", "/sessions/<uuid:session_id>/trace-summary",
           summary="Calls, tokens, cost, cache hit rate and duration of a session")
def session_summary(session_id: uuid.UUID):
    with state().db.transaction() as session:
        load_visible_session(session, session_id, Role.VIEWER)
        return {"summary": spans.summarize(session, session_id=session_id)}


@operation(bp, "GET", "/runs/<uuid:run_id>/trace-summary",
           summary="Calls, tokens, cost, cache hit rate and duration of a run")
def run_summary(run_id: uuid.UUID):
    with state().db.transaction() as session:
        load_visible_run(session, run_id, Role.VIEWER)
        return {"summary": spans.summarize(session, run_id=run_id)}
