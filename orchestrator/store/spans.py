"""Trace spans. Each is written when it starts (`ended_at` null while it runs) and completed when it
ends, in the transactions that journal the work, and announced as `span.started` / `span.finished`.

A span's id is derived from its run and key (`turn/0003/model`), so a step re-run after a crash
updates its span (attempt + 1) rather than leaving a second, orphaned one.
"""

from __future__ import annotations

import functools
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Numeric, Text, and_, bindparam, case, func, literal, not_, null, select, update
from sqlalchemy.dialects.postgresql import array, insert
from sqlalchemy.orm import Session

from orchestrator.store.events import append_event
from orchestrator.store.models import Span, expire_loaded, table_of

SPAN_NAMESPACE = uuid.UUID("6f1d1d2a-5b0e-4c53-9d0c-2f8a6c7e9b11")
MAX_PAGE = 200
TOKEN_KEYS = ("input_total", "uncached", "cache_read", "cache_write", "output", "reasoning")
UNREPORTED = ["cache_not_reported", "no_usage_reported"]  # usage flags: the provider said nothing of its cache


def span_id(run_id: uuid.UUID, key: str) -> uuid.UUID:
    return uuid.uuid5(SPAN_NAMESPACE, f"{run_id}/{key}")


def serialize_span(span: Any) -> dict[str, Any]:
    """A Span, or a row of the spans table."""
    return {"id": str(span.id), "position": span.position, "run_id": str(span.run_id),
            "session_id": str(span.session_id), "parent_id": str(span.parent_id) if span.parent_id else None,
            "kind": span.kind, "name": span.name, "status": span.status, "turn": span.turn, "attempt": span.attempt,
            "started_at": span.started_at.isoformat(), "ended_at": span.ended_at.isoformat() if span.ended_at else None,
            "duration_ms": span.duration_ms, "attributes": span.attributes}


# The span writes run several times per agent turn, so their statements are built once, with bound
# parameters, on the table (no ORM flush or identity-map work; a loaded Span is expired instead):
# building an upsert per call (its `excluded` columns above all) cost more than executing it.
_SPANS = table_of(Span)
# A span as its `span.started` / `span.finished` event carries it, and as the span writes return it:
# without the model call's prompt segments, which grow with the conversation (every message of every
# call, twice per call, into the event log and to every watcher, and decoded back at every write) and
# which no live view shows; the stored span and `GET .../spans` have them.
UNANNOUNCED = "prompt_segments"
_ANNOUNCED_COLUMNS = [column for column in _SPANS.c if column.name != "attributes"] + [
    _SPANS.c.attributes.op("-")(literal(UNANNOUNCED, Text)).label("attributes")]
_STARTED_COLUMNS = ("id", "session_id", "run_id", "parent_id", "kind", "name", "status", "turn", "attempt",
                    "started_at", "attributes")


def _start_statement(restart: bool) -> Any:
    statement = insert(_SPANS).values({name: bindparam(name, type_=_SPANS.c[name].type) for name in _STARTED_COLUMNS})
    if restart:
        statement = statement.on_conflict_do_update(
            index_elements=[_SPANS.c.id],
            set_={"status": "running", "attempt": _SPANS.c.attempt + 1, "started_at": statement.excluded.started_at,
                  "ended_at": None, "duration_ms": None, "attributes": statement.excluded.attributes})
    else:
        statement = statement.on_conflict_do_nothing(index_elements=[_SPANS.c.id])
    return statement.returning(*_ANNOUNCED_COLUMNS)


_START = {True: _start_statement(True), False: _start_statement(False)}
_ENDED_AT = bindparam("ended", type_=_SPANS.c.ended_at.type)
_END = (update(_SPANS).where(_SPANS.c.id == bindparam("span", type_=_SPANS.c.id.type), _SPANS.c.ended_at.is_(None))
        .values(status=bindparam("new_status", type_=_SPANS.c.status.type), ended_at=_ENDED_AT,
                duration_ms=func.round(func.extract("epoch", _ENDED_AT - _SPANS.c.started_at) * 1000, 1),
                attributes=_SPANS.c.attributes.op("||")(bindparam("more", type_=_SPANS.c.attributes.type)))
        .returning(*_ANNOUNCED_COLUMNS))


def start_span(session: Session, *, run_id: uuid.UUID, session_id: uuid.UUID, key: str, kind: str, name: str,
               parent_key: str | None = None, turn: int | None = None, attributes: dict[str, Any] | None = None,
               restart: bool = True) -> dict[str, Any] | None:
    """Open a span. With `restart`, an existing span with this key starts again (a re-run after a crash);
    without, an existing span is left alone (idempotent opening of the run span)."""
    identifier = span_id(run_id, key)
    parent_id = span_id(run_id, parent_key) if parent_key else None
    span = session.execute(_START[restart], dict(
        id=identifier, session_id=session_id, run_id=run_id, parent_id=parent_id, kind=kind, name=name,
        status="running", turn=turn, attempt=1, started_at=datetime.now(timezone.utc),
        attributes=attributes or {})).one_or_none()
    if span is None:
        return None
    expire_loaded(session, Span, identifier)
    payload = serialize_span(span)
    append_event(session, session_id, "span.started", payload, run_id=run_id)
    return payload


def end_span(session: Session, *, run_id: uuid.UUID, key: str, status: str,
             attributes: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Complete a running span (a span already ended is left as it is)."""
    return _end(session, span_id(run_id, key), run_id, status, attributes)


def _end(session: Session, identifier: uuid.UUID, run_id: uuid.UUID, status: str,
         attributes: dict[str, Any] | None) -> dict[str, Any] | None:
    span = session.execute(_END, dict(span=identifier, new_status=status, ended=datetime.now(timezone.utc),
                                      more=attributes or {})).one_or_none()
    if span is None:
        return None
    expire_loaded(session, Span, identifier)
    payload = serialize_span(span)
    append_event(session, span.session_id, "span.finished", payload, run_id=run_id)
    return payload


def end_open_spans(session: Session, run_id: uuid.UUID, status: str) -> None:
    """Close whatever is still running in a run (innermost first), e.g. when it is cancelled."""
    open_ids = session.scalars(select(Span.id).where(Span.run_id == run_id, Span.ended_at.is_(None))
                               .order_by(Span.position.desc())).all()
    for identifier in open_ids:
        _end(session, identifier, run_id, status, None)


def load_span(session: Session, run_id: uuid.UUID, key: str) -> Any:
    """The span's row (a Span's columns as attributes), or None."""
    return session.execute(_LOAD, {"span": span_id(run_id, key)}).one_or_none()


def previous_model_call(session: Session, session_id: uuid.UUID, before_position: int | None = None, *,
                        known: uuid.UUID | None = None) -> Any:
    """The session's last finished model call (before `before_position`): a row of its `id`,
    `prompt_segments` and `ended_at`, or None. When it is the span `known` (one whose segments the
    caller holds), `prompt_segments` is left out (None) and `is_known` is true."""
    return session.execute(_PREVIOUS, {"session": session_id, "known": known or _NO_SPAN,
                                       "before": before_position if before_position is not None else _NO_POSITION}
                           ).one_or_none()


# built once: each model call's end reads both (for its cache diagnosis)
_NO_POSITION = 2 ** 62
_LOAD = select(*_SPANS.c).where(_SPANS.c.id == bindparam("span", type_=_SPANS.c.id.type))
_NO_SPAN = uuid.UUID(int=0)
_IS_KNOWN = _SPANS.c.id == bindparam("known", type_=_SPANS.c.id.type)
_PREVIOUS = (select(_SPANS.c.id, (_IS_KNOWN).label("is_known"),
                    case((_IS_KNOWN, null()), else_=_SPANS.c.attributes["prompt_segments"]).label("prompt_segments"),
                    _SPANS.c.ended_at)
             .where(_SPANS.c.session_id == bindparam("session", type_=_SPANS.c.session_id.type),
                    _SPANS.c.kind == "model_call", _SPANS.c.ended_at.is_not(None),
                    _SPANS.c.position < bindparam("before", type_=_SPANS.c.position.type))
             .order_by(_SPANS.c.position.desc()).limit(1))


def list_spans(session: Session, *, session_id: uuid.UUID | None = None, run_id: uuid.UUID | None = None,
               after: int = 0, limit: int = 100, kind: str | None = None, status: str | None = None,
               turn: int | None = None, tool: str | None = None) -> list[Span]:
    query = select(Span).where(Span.position > after)
    if session_id is not None:
        query = query.where(Span.session_id == session_id)
    if run_id is not None:
        query = query.where(Span.run_id == run_id)
    if kind is not None:
        query = query.where(Span.kind == kind)
    if status is not None:
        query = query.where(Span.status == status)
    if turn is not None:
        query = query.where(Span.turn == turn)
    if tool is not None:
        query = query.where(Span.kind == "tool_call", Span.name == tool)
    return list(session.scalars(query.order_by(Span.position).limit(min(limit, MAX_PAGE))))


def summarize(session: Session, *, session_id: uuid.UUID | None = None,
              run_id: uuid.UUID | None = None) -> dict[str, Any]:
    """Calls, tokens, cost, cache hit rate and wall time over model and tool call spans: one aggregate
    in Postgres, so a session of thousands of calls costs one row over the wire, not every span."""
    row = session.execute(_summary_query(session_id is not None, run_id is not None),
                          {"session": session_id, "run": run_id}).one()
    tokens = {key: int(getattr(row, key)) for key in TOKEN_KEYS}
    hit_rate = round(tokens["cache_read"] / int(row.reported_input), 4) if row.reported_input else None
    return {"model_calls": row.model_calls, "tool_calls": row.tool_calls, "errors": row.errors, "tokens": tokens,
            "cost": {"total": round(float(row.cost_total), 8), "saved": round(float(row.cost_saved), 8)},
            "cache_hit_rate": hit_rate, "duration_ms": round(float(row.duration), 1)}


@functools.cache
def _summary_query(by_session: bool, by_run: bool) -> Any:
    """`summarize`'s aggregate, built once per filter (every run's end summarises the run)."""
    model = _SPANS.c.kind == "model_call"

    def total(path: tuple[str, str], where: Any) -> Any:
        return func.coalesce(func.sum(_SPANS.c.attributes[path].astext.cast(Numeric)).filter(where), 0)

    # Over the calls that report it: a provider that says nothing is "unknown" (None), not a 0% miss
    # (llama.cpp reports no cache reads).
    reported = and_(model, not_(func.coalesce(_SPANS.c.attributes[("usage", "flags")].has_any(array(UNREPORTED)),
                                              False)))
    query = select(func.count().filter(model).label("model_calls"),
                   func.count().filter(_SPANS.c.kind == "tool_call").label("tool_calls"),
                   func.count().filter(_SPANS.c.kind != "run", _SPANS.c.status.in_(("error", "interrupted")))
                   .label("errors"),
                   *(total(("usage", key), model).label(key) for key in TOKEN_KEYS),
                   total(("usage", "input_total"), reported).label("reported_input"),
                   total(("cost", "total"), model).label("cost_total"),
                   total(("cost", "saved"), model).label("cost_saved"),
                   func.coalesce(func.sum(_SPANS.c.duration_ms).filter(_SPANS.c.kind == "run"), 0).label("duration"))
    query = query.where(_SPANS.c.kind.in_(["model_call", "tool_call", "run"]))
    if by_session:
        query = query.where(_SPANS.c.session_id == bindparam("session", type_=_SPANS.c.session_id.type))
    if by_run:
        query = query.where(_SPANS.c.run_id == bindparam("run", type_=_SPANS.c.run_id.type))
    return query


def run_usage(session: Session, run_id: uuid.UUID) -> tuple[int, float, str | None]:
    """Tokens (input + output), cost in dollars and the model of a run's model calls."""
    spans = session.scalars(select(Span).where(Span.run_id == run_id, Span.kind == "model_call")
                            .order_by(Span.position))
    tokens, cost, model = 0, 0.0, None
    for span in spans:
        usage = span.attributes.get("usage") or {}
        tokens += int(usage.get("input_total", 0)) + int(usage.get("output", 0))
        cost += float((span.attributes.get("cost") or {}).get("total", 0.0))
        model = span.attributes.get("model") or model
    return tokens, round(cost, 8), model
