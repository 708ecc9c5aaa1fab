"""The per-session event log.

`append_event` takes the next `seq` by incrementing `sessions.last_seq` in the caller's transaction.
That row lock serialises event writers per session until commit, so commit order equals `seq` order
and a reader that sees `seq = n` has already been able to see every `seq < n`: replay by
`seq > since` can never skip an event that commits later. A rolled-back transaction gives its
number back, so the sequence has no gaps.

Event data is made storable (`storable.py`) before it is written, so the published copy equals the
stored one even when a tool's output held NUL bytes.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orchestrator.errors import NotFoundError
from orchestrator.store.database import add_to_outbox
from orchestrator.store.models import ChatSession, Event
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


def append_event(session: Session, session_id: uuid.UUID, event_type: str, data: dict[str, Any] | None = None,
                 *, run_id: uuid.UUID | None = None) -> dict[str, Any]:
    """Record an event in the caller's transaction; it is published after that transaction commits."""
    seq = session.execute(
        update(ChatSession)
        .where(ChatSession.id == session_id)
        .values(last_seq=ChatSession.last_seq + 1, updated_at=datetime.now(timezone.utc))
        .returning(ChatSession.last_seq)
    ).scalar_one_or_none()
    if seq is None:
        raise NotFoundError(f"session {session_id} does not exist")
    event = Event(session_id=session_id, seq=seq, type=event_type, run_id=run_id, data=storable(data or {}),
                  created_at=datetime.now(timezone.utc))
    session.add(event)
    session.flush()
    payload = serialize_event(event)
    add_to_outbox(session, payload)
    return payload


def list_events(session: Session, session_id: uuid.UUID, *, after_seq: int = 0, until_seq: int | None = None,
                limit: int = 500) -> list[dict[str, Any]]:
    query = select(Event).where(Event.session_id == session_id, Event.seq > after_seq)
    if until_seq is not None:
        query = query.where(Event.seq <= until_seq)
    rows = session.scalars(query.order_by(Event.seq).limit(limit))
    return [serialize_event(row) for row in rows]
