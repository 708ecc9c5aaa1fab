"""Content-addressed blobs: large payloads stored once, referenced by their SHA-256.

A blob's bytes are shared, but an uploaded image belongs to the projects it was uploaded to
(`project_blobs`): a message may show, and a member may download, only blobs of its own project.
Asking about a blob of another project gets exactly the answer an unknown digest gets, so a digest
is no oracle for what other tenants uploaded.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import ARRAY, any_, bindparam, select
from sqlalchemy import event as orm_event
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from orchestrator.errors import NotFoundError
from orchestrator.store.models import Blob, ProjectBlob, table_of


def put_blob(session: Session, data: bytes, media_type: str) -> str:
    """Store `data` (idempotently) and return its SHA-256 hex digest."""
    digest = hashlib.sha256(data).hexdigest()
    session.execute(insert(Blob).values(sha256=digest, size=len(data), media_type=media_type, data=data,
                                        created_at=datetime.now(timezone.utc))
                    .on_conflict_do_nothing(index_elements=[Blob.sha256]))
    return digest


def put_blobs(session: Session, items: list[tuple[bytes, str]], *, stored: set[str] | None = None) -> list[str]:
    """Store many (data, media type) pairs idempotently with at most one look-up and one insert, sending
    only the bytes not stored yet (a prompt's earlier messages are, turn after turn); their digests.

    `stored`: digests the caller knows are stored, not looked up again; what this call finds stored is
    added to it, and what it inserts once its transaction commits. A run's turns in one task share one
    (a conversation's earlier messages are segments of every later call: looking them all up each turn
    grew with the conversation). Blobs are never deleted, so an entry stays true."""
    digests = [hashlib.sha256(data).hexdigest() for data, _ in items]
    unsure = sorted({digest for digest in digests if stored is None or digest not in stored})
    known = set(session.scalars(_KNOWN, {"digests": unsure})) if unsure else set()
    now, missing = datetime.now(timezone.utc), {}
    for digest, (data, media_type) in zip(digests, items):
        if digest not in known and digest in unsure:
            missing[digest] = {"sha256": digest, "size": len(data), "media_type": media_type, "data": data,
                               "created_at": now}
    if missing:
        session.execute(_INSERT, list(missing.values()))
    if stored is not None:
        stored.update(known)  # committed by someone
        if missing:
            session.info.setdefault(INSERTED_KEY, []).append((stored, set(missing)))
    return digests


# built once; `= ANY(array)` is one statement whatever the number of digests, so Postgres prepares
# it once per connection
_BLOBS = table_of(Blob)
_KNOWN = select(_BLOBS.c.sha256).where(_BLOBS.c.sha256 == any_(bindparam("digests", type_=ARRAY(_BLOBS.c.sha256.type))))
_INSERT = insert(_BLOBS).on_conflict_do_nothing(index_elements=[_BLOBS.c.sha256])
INSERTED_KEY = "boocode_blobs_inserted"  # session.info: [(a caller's `stored`, digests this transaction inserted)]


@orm_event.listens_for(Session, "after_commit")
def _inserted_are_stored(session: Session) -> None:
    for stored, digests in session.info.pop(INSERTED_KEY, ()):
        stored.update(digests)


@orm_event.listens_for(Session, "after_soft_rollback")
def _inserted_are_gone(session: Session, _transaction: Any) -> None:
    session.info.pop(INSERTED_KEY, None)


def put_project_blob(session: Session, project_id: uuid.UUID, data: bytes, media_type: str) -> str:
    """Store `data` as an upload to `project_id` and return its digest."""
    digest = put_blob(session, data, media_type)
    session.execute(insert(ProjectBlob).values(project_id=project_id, sha256=digest,
                                               created_at=datetime.now(timezone.utc))
                    .on_conflict_do_nothing(index_elements=[ProjectBlob.project_id, ProjectBlob.sha256]))
    return digest


def load_blob(session: Session, digest: str) -> Blob:
    blob = session.get(Blob, digest)
    if blob is None:
        raise NotFoundError(f"blob {digest} does not exist")
    return blob


def blobs_outside_project(session: Session, project_id: uuid.UUID, digests: list[str]) -> list[str]:
    """The digests not uploaded to `project_id`: unknown ones and other projects' alike."""
    if not digests:
        return []
    owned = set(session.scalars(select(ProjectBlob.sha256).where(ProjectBlob.project_id == project_id,
                                                                 ProjectBlob.sha256.in_(digests))))
    return [digest for digest in dict.fromkeys(digests) if digest not in owned]
