"""The per-session event log.

`append_event` takes the next `seq` by incrementing `sessions.last_seq` in the caller's transaction.
That row lock serialises event writers per session until commit, so commit order equals `seq` order
and a reader that sees `seq = n` has already been able to see every `seq < n`: replay by
`seq > since` can never skip an event that commits later. A rolled-back transaction gives its
number back, so the sequence has no gaps.

Two statements per transaction, not two per event: the first event of a session in a transaction
takes the row lock with the increment; later ones in the same transaction count on from it in memory
(nobody else can take a number while the lock is held). Just before the commit, `write_pending`
stores the last number handed out and inserts the transaction's event rows in one statement. (An
event is therefore not visible to queries inside the transaction that appends it; none needs to be.)

Event data is made storable (`storable.py`) before it is written, so the published copy equals the
stored one even when a tool's output held NUL bytes.
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
from orchestrator.store.models import ChatSession, Event, table_of
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


SEQUENCES_KEY = "boocode_sequences"  # session.info: {session_id: [seq written to the row, seq handed out]}


_SESSIONS = table_of(ChatSession)
# built once (every transaction that appends an event runs it): see store/spans.py
_TAKE_SEQ = (update(_SESSIONS).where(_SESSIONS.c.id == bindparam("session", type_=_SESSIONS.c.id.type))
             .values(last_seq=_SESSIONS.c.last_seq + 1, updated_at=bindparam("now", type_=_SESSIONS.c.updated_at.type))
             .returning(_SESSIONS.c.last_seq))


_STORE_SEQ = (update(_SESSIONS).where(_SESSIONS.c.id == bindparam("session", type_=_SESSIONS.c.id.type))
              .values(last_seq=bindparam("seq", type_=_SESSIONS.c.last_seq.type)))
_INSERT_EVENTS = insert(table_of(Event))


def next_seq(session: Session, session_id: uuid.UUID) -> int:
    """The session's next event number, under its row lock (taken by the first call in a transaction)."""
    sequences = session.info.setdefault(SEQUENCES_KEY, {})
    if session_id in sequences:
        sequences[session_id][1] += 1
        return int(sequences[session_id][1])
    seq = session.execute(_TAKE_SEQ, {"session": session_id, "now": datetime.now(timezone.utc)}).scalar_one_or_none()
    if seq is None:
        raise NotFoundError(f"session {session_id} does not exist")
    loaded = session.identity_map.get(session.identity_key(ChatSession, session_id))
    if loaded is not None:  # a ChatSession this session loaded no longer says what the row says
        session.expire(loaded, ["last_seq", "updated_at"])
    sequences[session_id] = [seq, seq]
    return int(seq)


PENDING_KEY = "boocode_pending_events"  # session.info: event rows to insert just before the commit


def write_pending(session: Session) -> None:
    """Store the last number handed out per session and insert the pending event rows (before commit)."""
    for session_id, (written, handed_out) in session.info.pop(SEQUENCES_KEY, {}).items():
        if handed_out != written:
            session.execute(_STORE_SEQ, {"session": session_id, "seq": handed_out})
    rows = session.info.pop(PENDING_KEY, [])
    if rows:
        session.execute(_INSERT_EVENTS, rows)


@orm_event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    write_pending(session)


@orm_event.listens_for(Session, "after_soft_rollback")
def _forget_pending(session: Session, _transaction: Any) -> None:
    session.info.pop(SEQUENCES_KEY, None)  # the numbers went back with the rollback
    session.info.pop(PENDING_KEY, None)


def append_event(session: Session, session_id: uuid.UUID, event_type: str, data: dict[str, Any] | None = None,
                 *, run_id: uuid.UUID | None = None) -> dict[str, Any]:
    """Record an event in the caller's transaction; it is published after that transaction commits."""
    row = {"session_id": session_id, "seq": next_seq(session, session_id), "type": event_type, "run_id": run_id,
           "data": storable(data or {}), "created_at": datetime.now(timezone.utc)}
    session.info.setdefault(PENDING_KEY, []).append(row)
    payload = {"seq": row["seq"], "session_id": str(session_id), "type": event_type,
               "run_id": str(run_id) if run_id else None, "data": row["data"],
               "created_at": row["created_at"].isoformat()}
    add_to_outbox(session, payload)
    return payload


def list_events(session: Session, session_id: uuid.UUID, *, after_seq: int = 0, until_seq: int | None = None,
                limit: int = 500) -> list[dict[str, Any]]:
    query = select(Event).where(Event.session_id == session_id, Event.seq > after_seq)
    if until_seq is not None:
        query = query.where(Event.seq <= until_seq)
    rows = session.scalars(query.order_by(Event.seq).limit(limit))
    return [serialize_event(row) for row in rows]
