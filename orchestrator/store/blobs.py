"""Content-addressed blobs: large payloads stored once, referenced by their SHA-256."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from orchestrator.errors import NotFoundError
from orchestrator.store.models import Blob


def put_blob(session: Session, data: bytes, media_type: str) -> str:
    """Store `data` (idempotently) and return its SHA-256 hex digest."""
    digest = hashlib.sha256(data).hexdigest()
    session.execute(insert(Blob).values(sha256=digest, size=len(data), media_type=media_type, data=data,
                                        created_at=datetime.now(timezone.utc))
                    .on_conflict_do_nothing(index_elements=[Blob.sha256]))
    return digest


def load_blob(session: Session, digest: str) -> Blob:
    blob = session.get(Blob, digest)
    if blob is None:
        raise NotFoundError(f"blob {digest} does not exist")
    return blob


def missing_blobs(session: Session, digests: list[str]) -> list[str]:
    if not digests:
        return []
    present = set(session.scalars(select(Blob.sha256).where(Blob.sha256.in_(digests))))
    return [digest for digest in digests if digest not in present]
