"""The per-session event log.

Event numbers are taken at commit. `append_event` only collects the event; just before the commit,
`write_pending` flushes the ORM's rows, then for each session (in id order) takes the transaction's
numbers with one `UPDATE sessions SET last_seq = last_seq + n`, and inserts the event rows (and the
messages that carry their event's number) in one statement each. The row lock that increment takes
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

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import bindparam, insert, select, update
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
# built once (every transaction that appends an event runs them): see store/spans.py
_TAKE_SEQS = (update(_SESSIONS).where(_SESSIONS.c.id == bindparam("session", type_=_SESSIONS.c.id.type))
              .values(last_seq=_SESSIONS.c.last_seq + bindparam("count", type_=_SESSIONS.c.last_seq.type),
                      updated_at=bindparam("now", type_=_SESSIONS.c.updated_at.type))
              .returning(_SESSIONS.c.last_seq))
_LOCK_SESSION = select(_SESSIONS.c.id).where(_SESSIONS.c.id == bindparam("session", type_=_SESSIONS.c.id.type)) \
    .with_for_update()
_INSERT_EVENTS = insert(table_of(Event))
_INSERT_MESSAGES = insert(table_of(Message))
_MESSAGE_COLUMNS = ("id", "session_id", "run_id", "role", "parts", "seq", "created_by", "created_at")

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
    rows, messages, now = [], [], datetime.now(timezone.utc)
    for session_id in sorted(pending):
        entries = pending[session_id]
        last = session.execute(_TAKE_SEQS, {"session": session_id, "count": len(entries), "now": now}
                               ).scalar_one_or_none()
        if last is None:
            raise NotFoundError(f"session {session_id} does not exist")
        expire_loaded(session, ChatSession, session_id, ["last_seq", "updated_at"])
        for seq, (row, payload, message) in enumerate(entries, start=int(last) - len(entries) + 1):
            row["seq"] = payload["seq"] = seq
            rows.append(row)
            if message is not None:
                message.seq = seq
                messages.append({name: getattr(message, name) for name in _MESSAGE_COLUMNS})
    session.execute(_INSERT_EVENTS, rows)
    if messages:
        session.execute(_INSERT_MESSAGES, messages)


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
