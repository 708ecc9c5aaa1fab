"""Chat sessions and their messages. Each message is announced by a `message.created` event whose
`seq` also orders the messages.

A message's parts are made storable (`storable.py`: NUL escaped, lone surrogates replaced) before
they are written, so the stored message, its event and what the caller gets back are the same. An
image part may reference only a blob uploaded to the session's own project.

Opening a session costs a page, not the session (docs/web-ui.md, "Big sessions"): the conversation
is read in keyset pages by `seq` (`after` forwards, `before` backwards from the newest), child runs'
messages are left out from the index alone (`ix_messages_session_seq_run` carries `run_id`), and the
session list reads one run per session for its activity badge.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, NamedTuple

from sqlalchemy import Select, bindparam, func, or_, select, tuple_
from sqlalchemy.orm import Session

from orchestrator.domain.enums import MessageRole
from orchestrator.errors import NotFoundError, ValidationError
from orchestrator.store.blobs import blobs_outside_project
from orchestrator.store.events import append_event
from orchestrator.store.models import Approval, ChatSession, Message, ProjectBlob, Run, table_of
from orchestrator.store.storable import storable


def serialize_session(chat: ChatSession) -> dict[str, Any]:
    return {"id": str(chat.id), "project_id": str(chat.project_id), "title": chat.title,
            "created_at": chat.created_at.isoformat(), "updated_at": chat.updated_at.isoformat(),
            "last_seq": chat.last_seq}


def serialize_message(message: Message) -> dict[str, Any]:
    return {"id": str(message.id), "session_id": str(message.session_id),
            "run_id": str(message.run_id) if message.run_id else None, "role": message.role,
            "parts": message.parts, "seq": message.seq, "created_at": message.created_at.isoformat()}


def create_session(session: Session, project_id: uuid.UUID, title: str, created_by: uuid.UUID | None) -> ChatSession:
    now = datetime.now(timezone.utc)
    chat = ChatSession(project_id=project_id, title=title, created_by=created_by, created_at=now, updated_at=now,
                       last_seq=0)
    session.add(chat)
    session.flush()
    append_event(session, chat.id, "session.created", {"title": title})
    return chat


def load_session(session: Session, session_id: uuid.UUID) -> ChatSession:
    chat = session.get(ChatSession, session_id)
    if chat is None:
        raise NotFoundError(f"session {session_id} does not exist")
    return chat


def list_sessions(session: Session, project_id: uuid.UUID, *, limit: int = 100) -> list[ChatSession]:
    return list(session.scalars(select(ChatSession).where(ChatSession.project_id == project_id)
                                .order_by(ChatSession.updated_at.desc()).limit(limit)))


def add_message(session: Session, session_id: uuid.UUID, role: MessageRole, parts: list[dict[str, Any]], *,
                created_by: uuid.UUID | None = None, run_id: uuid.UUID | None = None) -> Message:
    images = [part["blob"] for part in parts if part.get("type") == "image"]
    missing = blobs_outside_project(session, load_session(session, session_id).project_id, images) if images else []
    if missing:
        raise ValidationError("the message refers to images that were not uploaded to this project; "
                              "upload them to one of its sessions first", details={"missing_blobs": missing})
    parts = storable(parts)
    message = Message(id=uuid.uuid4(), session_id=session_id, role=role.value, parts=parts, created_by=created_by,
                      run_id=run_id, created_at=datetime.now(timezone.utc))
    # stored with its event at commit, when both get their number (`seq`): not visible before
    append_event(session, session_id, "message.created",
                 {"message_id": str(message.id), "role": role.value, "parts": parts}, run_id=run_id, message=message)
    return message


class Said(NamedTuple):
    """A message as a prompt needs it: who said it and what (and its number)."""

    role: str
    parts: list[dict[str, Any]]
    seq: int


def list_history(session: Session, run: Run, *, known: list[Said] | None = None) -> list[Said]:
    """The conversation a run continues: messages of this session's top-level runs of the same kind
    created up to and including `run`, run by run (runs in a session go one at a time), each run's
    messages in order. A child run (a workflow's agent) sees only its own messages. Read every turn,
    so only the columns a prompt needs, from statements built once.

    `known`: this history as read at an earlier turn of the same lease. Only the run's own messages
    since are read then: the earlier runs are finished, and only the lease holder adds the run's."""
    if known is not None:
        after = max((said.seq for said in known), default=0)
        rows = session.execute(_OWN_HISTORY, {"run": run.id, "after": after})
        return known + [Said(*row) for row in rows]
    if run.parent_id is not None:
        rows = session.execute(_OWN_HISTORY, {"run": run.id, "after": 0})
    else:
        rows = session.execute(_HISTORY, {"session": run.session_id, "kind": run.kind, "created": run.created_at,
                                          "run": run.id})
    return [Said(*row) for row in rows]


_MESSAGES, _RUNS = table_of(Message), table_of(Run)
_OWN_HISTORY = (select(_MESSAGES.c.role, _MESSAGES.c.parts, _MESSAGES.c.seq)
                .where(_MESSAGES.c.run_id == bindparam("run", type_=_MESSAGES.c.run_id.type),
                       _MESSAGES.c.seq > bindparam("after", type_=_MESSAGES.c.seq.type))
                .order_by(_MESSAGES.c.seq))
_HISTORY = (select(_MESSAGES.c.role, _MESSAGES.c.parts, _MESSAGES.c.seq).join(_RUNS, _RUNS.c.id == _MESSAGES.c.run_id)
            .where(_MESSAGES.c.session_id == bindparam("session", type_=_MESSAGES.c.session_id.type),
                   _RUNS.c.kind == bindparam("kind", type_=_RUNS.c.kind.type), _RUNS.c.parent_id.is_(None),
                   tuple_(_RUNS.c.created_at, _RUNS.c.id) <= tuple_(bindparam("created", type_=_RUNS.c.created_at.type),
                                                                    bindparam("run", type_=_RUNS.c.id.type)))
            .order_by(_RUNS.c.created_at, _RUNS.c.id, _MESSAGES.c.seq))


def session_references_blob(session: Session, session_id: uuid.UUID, digest: str) -> bool:
    """Whether a message of the session shows the blob and the blob was uploaded to its project."""
    chat = load_session(session, session_id)
    owned = select(ProjectBlob.sha256).where(ProjectBlob.project_id == chat.project_id, ProjectBlob.sha256 == digest)
    return session.scalar(select(Message.id).where(Message.session_id == session_id,
                                                   Message.parts.contains([{"blob": digest}]),
                                                   owned.exists()).limit(1)) is not None


def conversation_query(session_id: uuid.UUID, *, after_seq: int = 0, before_seq: int | None = None,
                       run_id: uuid.UUID | None = None) -> Select:
    """The messages with seq in (after_seq, before_seq), unordered: the session's conversation
    (messages of child runs, such as a workflow's agents, are left out) or, with `run_id`, one run's."""
    query = select(Message).where(Message.session_id == session_id, Message.seq > after_seq)
    if before_seq is not None:
        query = query.where(Message.seq < before_seq)
    if run_id is not None:
        return query.where(Message.run_id == run_id)
    children = select(Run.id).where(Run.session_id == session_id, Run.parent_id.is_not(None))
    return query.where(or_(Message.run_id.is_(None), Message.run_id.not_in(children)))


def page_query(session_id: uuid.UUID, *, after_seq: int = 0, before_seq: int | None = None, limit: int = 200,
               run_id: uuid.UUID | None = None) -> Select:
    """With `before_seq`, the newest `limit` messages below it (newest first), else the oldest `limit`
    after `after_seq`: either way an index range scan that stops after `limit` rows."""
    query = conversation_query(session_id, after_seq=after_seq, before_seq=before_seq, run_id=run_id)
    return query.order_by(Message.seq.desc() if before_seq is not None else Message.seq).limit(limit)


def list_messages(session: Session, session_id: uuid.UUID, *, after_seq: int = 0, before_seq: int | None = None,
                  limit: int = 200, run_id: uuid.UUID | None = None) -> list[Message]:
    """A page of the conversation in seq order: `before_seq` pages back from the newest (the session's
    `last_seq` + 1 gives the latest page), `after_seq` pages forwards from the oldest."""
    found = list(session.scalars(page_query(session_id, after_seq=after_seq, before_seq=before_seq, limit=limit,
                                            run_id=run_id)))
    return found[::-1] if before_seq is not None else found


def count_messages_before(session: Session, session_id: uuid.UUID, before_seq: int, *,
                          run_id: uuid.UUID | None = None) -> int:
    """How many messages of the conversation come before `before_seq` (the UI's "N earlier messages").
    The one read here that grows with the session, so it is asked for, not always sent: an index-only
    count over `ix_messages_session_seq_run`."""
    keys = conversation_query(session_id, before_seq=before_seq, run_id=run_id).with_only_columns(Message.seq)
    return session.scalar(select(func.count()).select_from(keys.subquery())) or 0


def latest_chat_run_query(session_ids: list[uuid.UUID]) -> Select:
    """Each listed session with the status of its latest top-level agent run (None if it never ran):
    one backward step on `ix_runs_session_chat` per session, however many runs it holds."""
    latest = (select(Run.status)
              .where(Run.session_id == ChatSession.id, Run.kind == "agent", Run.parent_id.is_(None))
              .order_by(Run.created_at.desc(), Run.id.desc()).limit(1)
              .correlate(ChatSession).scalar_subquery())
    pending = (select(Approval.id).where(Approval.session_id == ChatSession.id, Approval.status == "pending")
               .correlate(ChatSession).exists())
    return (select(ChatSession.id, latest.label("status"), pending.label("pending"))
            .where(ChatSession.id.in_(session_ids)))


def activity(session: Session, session_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Each session's state for a list view, from its latest chat run: `running` (queued or running),
    `waiting` (for an approval), `failed`, `cancelled`, or `idle` (finished well, or never ran).
    A pending approval says `waiting` as soon as it is asked for, as the session page shows it, not
    only once the run has parked (a later transaction)."""
    if not session_ids:
        return {}
    mapping = {"queued": "running", "running": "running", "waiting": "waiting", "failed": "failed",
               "cancelled": "cancelled", "interrupted": "failed"}
    rows = session.execute(latest_chat_run_query(session_ids))
    found = {row.id: "waiting" if row.pending and row.status in ("queued", "running")
             else mapping.get(row.status, "idle") for row in rows}
    return {session_id: found.get(session_id, "idle") for session_id in session_ids}
