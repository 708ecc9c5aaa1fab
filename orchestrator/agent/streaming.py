"""Live deltas as events, coalesced.

Deltas are committed to Postgres like every event (so a client that reconnects mid-stream replays
them), but in batches: at most one `text.delta` / `tool_call.delta` event per interval, each fenced
by the lease so a worker that lost its run cannot add to it; the last batch is written with the
model call's result (`write`). The first delta opens the first interval, so a model that answers
within one interval costs no transaction of its own. The fence also notices cancellation,
which stops a stream within one interval.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.orm import Session

from orchestrator.store import runs
from orchestrator.store.database import Database
from orchestrator.store.events import append_event
from orchestrator.domain.enums import RunStatus
from orchestrator.errors import RunCancelledError


class DeltaPublisher:
    def __init__(self, db: Database, lease: runs.Lease, turn: int, interval: float = 0.1) -> None:
        self.db = db
        self.lease = lease
        self.turn = turn
        self.interval = interval
        self._text: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self._attempt = 1
        self._last_flush: float | None = None  # the first delta opens the first window

    def add(self, delta: dict[str, Any]) -> None:
        if delta["attempt"] != self._attempt:
            self.flush()
            self._attempt = delta["attempt"]
        if delta["kind"] == "text":
            self._text.append(delta["text"])
        else:
            slot = self._calls.setdefault(delta["index"], {"index": delta["index"], "id": delta["id"],
                                                           "name": delta["name"], "arguments": ""})
            slot.update(id=delta["id"] or slot["id"], name=delta["name"] or slot["name"])
            slot["arguments"] += delta["arguments"]
        now = time.monotonic()
        if self._last_flush is None:
            self._last_flush = now
        elif now - self._last_flush >= self.interval:
            self.flush()

    def flush(self) -> None:
        """Commit what is pending now (mid-stream, once per interval)."""
        self._last_flush = time.monotonic()
        if not self._text and not self._calls:
            return
        with self.db.transaction() as session:
            if runs.check_fence(session, self.lease) == RunStatus.CANCELLED.value:
                raise RunCancelledError(f"run {self.lease.run_id} was cancelled")
            self.write(session)

    def write(self, session: Session) -> None:
        """Append what is pending in the caller's (fenced) transaction: the stream's last deltas go in
        the transaction that records the model call, not one of their own."""
        if self._text:
            append_event(session, self.lease.session_id, "text.delta",
                         {"turn": self.turn, "attempt": self._attempt, "text": "".join(self._text)},
                         run_id=self.lease.run_id)
        for call in self._calls.values():
            append_event(session, self.lease.session_id, "tool_call.delta",
                         {"turn": self.turn, "attempt": self._attempt, **call}, run_id=self.lease.run_id)
        self._text.clear()
        self._calls.clear()
