"""Engines, transactions and the after-commit outbox.

`Database.transaction()` is the only way the core writes. Events appended inside it are kept in an
outbox on the SQLAlchemy session and handed to the publisher only after the commit succeeded, so
Redis never carries anything Postgres does not already hold (invariant 1). A failed publish is
logged and otherwise ignored: subscribers fill gaps from Postgres by `seq`.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from typing import Any, Iterator, Protocol

from sqlalchemy import create_engine, exc
from sqlalchemy import event as orm_event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

OUTBOX_KEY = "boocode_outbox"


class Publisher(Protocol):
    def publish(self, event: dict[str, Any]) -> None: ...


class NullPublisher:
    """For processes that write but have nobody listening (migrations, admin commands)."""

    def publish(self, event: dict[str, Any]) -> None:
        return None


class Database:
    """One engine per process. Safe across `fork()`: a child re-creates its engine on first use."""

    def __init__(self, url: str, publisher: Publisher | None = None, *, pool_size: int = 5) -> None:
        self.url = url
        self.publisher: Publisher = publisher or NullPublisher()
        self._pool_size = pool_size
        self._engine: Engine | None = None
        self._engine_pid: int | None = None
        self._sessionmaker: sessionmaker[Session] | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None or self._engine_pid != os.getpid():
            if self._engine is not None:
                # Inherited over fork: drop the parent's connections without closing them under it.
                self._engine.dispose(close=False)
            self._engine = create_engine(self.url, pool_size=self._pool_size, max_overflow=20)
            ping_when_idle(self._engine)
            self._engine_pid = os.getpid()
            self._sessionmaker = sessionmaker(self._engine, expire_on_commit=False)
        return self._engine

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A short unit of work: commit on success, roll back on error, then publish its events."""
        self.engine  # noqa: B018 - makes sure the sessionmaker belongs to this process
        assert self._sessionmaker is not None
        with self._sessionmaker() as session:
            session.info[OUTBOX_KEY] = []
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
            outbox = session.info.pop(OUTBOX_KEY)
        if outbox:
            self._publish(outbox)

    def _publish(self, events: list[dict[str, Any]]) -> None:
        """Hand committed events to the transport, in one round trip where it can; a failure is logged only
        (transport only: Postgres already holds the events, and subscribers fill gaps from it)."""
        try:
            many = getattr(self.publisher, "publish_many", None)
            if many is not None and len(events) > 1:
                many(events)
                return
            for event in events:
                self.publisher.publish(event)
        except Exception:
            logger.warning("could not publish events", extra={"session_id": events[0].get("session_id"),
                                                              "seqs": [event.get("seq") for event in events]},
                           exc_info=True)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


IDLE_PING_SECONDS = 1.0


def ping_when_idle(engine: Engine) -> None:
    """Test a pooled connection before reuse only when it sat idle for a while (a Postgres restart meanwhile
    would have broken it). `pool_pre_ping` pings on every checkout: a round trip, and a transaction of
    its own, per unit of work. A connection that breaks within a second of its last use fails that one
    transaction with OperationalError, which every caller already treats as Postgres being unreachable."""
    @orm_event.listens_for(engine, "connect")
    @orm_event.listens_for(engine, "checkin")
    def _checked_in(_connection: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()  # a new connection needs no ping either

    @orm_event.listens_for(engine, "checkout")
    def _checked_out(connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("checked_in", 0.0) < IDLE_PING_SECONDS:
            return
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            connection.rollback()
        except Exception as error:
            raise exc.DisconnectionError(f"pooled connection is broken: {error}") from error


def add_to_outbox(session: Session, event: dict[str, Any]) -> None:
    session.info.setdefault(OUTBOX_KEY, []).append(event)
