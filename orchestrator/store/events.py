"""The per-session event log.

Event numbers are taken at commit. `append_event` only collects the event; just before the commit,
`write_pending` flushes the ORM's rows, then for each session (in id order) takes the transaction's
numbers with `UPDATE sessions SET last_seq = last_seq + n` and inserts the event rows (and the
messages that carry their event's number), all in one statement (`_STORE_EVENTS`). The row lock that increment takes
holds until the commit, so commit order equals `seq` order and a reader that sees `seq = n` has
already been able to see every `seq < n`: replay by `seq > since` can never skip an event that
commits later. A rolled-back transaction took no number, so the sequence has no gaps.

The lock is taken last and held only for the last statements of a transaction, not from its first
event: the agents of one workflow share its session, and waited for each other's whole transactions
when the first event took it. Whoever must decide under the session row (subagent delivery) takes it
explicitly first (`lock_session`). Session rows are the last locks a transaction takes, in id order,
so they add no deadlock.

An event is not visible to queries inside the transaction that appends it, and neither is a message
added there; none needs to be. Event data is made storable (`storable.py`) before it is written, so
the published copy equals the stored one even when a tool's output held NUL bytes.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import bindparam, select, text
from sqlalchemy import event as orm_event
from sqlalchemy.orm import Session

from orchestrator.errors import NotFoundError
from orchestrator.store.database import add_to_outbox
from orchestrator.store.models import ChatSession, Event, Message, expire_loaded, table_of
from orchestrator.store.storable import storable


def serialize_event(event: Event) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "session_id": str(event.session_id),
        "type": event.type,
        "run_id": str(event.run_id) if event.run_id else None,
        "data": event.data,
        "created_at": event.created_at.isoformat(),
    }


_SESSIONS = table_of(ChatSession)
# One statement per session and transaction, built once: it takes the transaction's event numbers
# (the `UPDATE` locks the session row until commit) and inserts the event rows and the messages that
# carry their numbers, so numbering and storing cost one round trip instead of three. The rows come
# as one JSON array each; `ord` is a row's place in the transaction, so its number is the block's
# first plus `ord - 1`. No session row: nothing is inserted and no row comes back.
_STORE_EVENTS = text("""
WITH taken AS (
    UPDATE sessions SET last_seq = last_seq + :count, updated_at = :now WHERE id = :session
    RETURNING last_seq - :count AS base
), stored_events AS (
    INSERT INTO events (session_id, seq, type, run_id, data, created_at)
    SELECT :session, taken.base + row.ord, row.type, row.run_id, row.data, row.created_at
    FROM taken, ROWS FROM (jsonb_to_recordset(CAST(:events AS jsonb))
                           AS (type text, run_id uuid, data jsonb, created_at timestamptz))
         WITH ORDINALITY AS row(type, run_id, data, created_at, ord)
), stored_messages AS (
    INSERT INTO messages (id, session_id, run_id, role, parts, seq, created_by, created_at)
    SELECT row.id, :session, row.run_id, row.role, row.parts, taken.base + row.ord, row.created_by, row.created_at
    FROM taken, jsonb_to_recordset(CAST(:messages AS jsonb))
         AS row(id uuid, run_id uuid, role text, parts jsonb, ord bigint, created_by uuid, created_at timestamptz)
)
SELECT base FROM taken
""").bindparams(bindparam("session", type_=_SESSIONS.c.id.type), bindparam("now", type_=_SESSIONS.c.updated_at.type))
_LOCK_SESSION = select(_SESSIONS.c.id).where(_SESSIONS.c.id == bindparam("session", type_=_SESSIONS.c.id.type)) \
    .with_for_update()

PENDING_KEY = "boocode_pending_events"  # session.info: {session_id: [(event row, its payload, its message)]}


def lock_session(session: Session, session_id: uuid.UUID) -> None:
    """Hold the session row until commit, for a decision that must not interleave with another
    transaction's on the same session (the events' own numbering takes it only at the end)."""
    if session.execute(_LOCK_SESSION, {"session": session_id}).one_or_none() is None:
        raise NotFoundError(f"session {session_id} does not exist")


def write_pending(session: Session) -> None:
    """Number the transaction's events and store them, with the messages that carry their numbers
    (just before the commit; see the module's docstring)."""
    pending: dict[uuid.UUID, list[tuple[dict[str, Any], dict[str, Any], Message | None]]] = \
        session.info.pop(PENDING_KEY, {})
    if not pending:
        return
    session.flush()  # the rows the events refer to, and every row lock but the sessions'
    now = datetime.now(timezone.utc)
    for session_id in sorted(pending):
        entries = pending[session_id]
        rows, messages = [], []
        for ord_, (row, _payload, message) in enumerate(entries, start=1):
            rows.append({"type": row["type"], "run_id": row["run_id"], "data": row["data"],
                         "created_at": row["created_at"]})
            if message is not None:
                messages.append({"id": message.id, "run_id": message.run_id, "role": message.role,
                                 "parts": message.parts, "ord": ord_, "created_by": message.created_by,
                                 "created_at": message.created_at})
        base = session.execute(_STORE_EVENTS, {"session": session_id, "count": len(entries), "now": now,
                                               "events": _as_json(rows), "messages": _as_json(messages)}
                               ).scalar_one_or_none()
        if base is None:
            raise NotFoundError(f"session {session_id} does not exist")
        expire_loaded(session, ChatSession, session_id, ["last_seq", "updated_at"])
        for seq, (row, payload, message) in enumerate(entries, start=int(base) + 1):
            row["seq"] = payload["seq"] = seq
            if message is not None:
                message.seq = seq


def _as_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=_plain, ensure_ascii=False, separators=(",", ":"))


def _plain(value: Any) -> str:
    """uuids and timestamps as JSON strings (Postgres reads them back as uuid and timestamptz)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


@orm_event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    write_pending(session)


@orm_event.listens_for(Session, "after_soft_rollback")
def _forget_pending(session: Session, _transaction: Any) -> None:
    session.info.pop(PENDING_KEY, None)


def append_event(session: Session, session_id: uuid.UUID, event_type: str, data: dict[str, Any] | None = None,
                 *, run_id: uuid.UUID | None = None, message: Message | None = None) -> dict[str, Any]:
    """Record an event in the caller's transaction; it gets its number at commit and is published
    after. `message`: a Message (not added to the session) stored with the event, carrying its number."""
    row = {"session_id": session_id, "seq": None, "type": event_type, "run_id": run_id,
           "data": storable(data or {}), "created_at": datetime.now(timezone.utc)}
    payload = {"seq": None, "session_id": str(session_id), "type": event_type,
               "run_id": str(run_id) if run_id else None, "data": row["data"],
               "created_at": row["created_at"].isoformat()}
    session.info.setdefault(PENDING_KEY, {}).setdefault(session_id, []).append((row, payload, message))
    add_to_outbox(session, payload)
    return payload


def list_events(session: Session, session_id: uuid.UUID, *, after_seq: int = 0, until_seq: int | None = None,
                limit: int = 500) -> list[dict[str, Any]]:
    query = select(Event).where(Event.session_id == session_id, Event.seq > after_seq)
    if until_seq is not None:
        query = query.where(Event.seq <= until_seq)
    rows = session.scalars(query.order_by(Event.seq).limit(limit))
    return [serialize_event(row) for row in rows]
