"""Live deltas as events, coalesced.

Deltas are committed to Postgres like every event (so a client that reconnects mid-stream replays
them), but in batches: at most one `text.delta` / `tool_call.delta` event per interval, each fenced
by the lease so a worker that lost its run cannot add to it. A delta waits at most one interval: the
first delta of a batch opens it and a timer commits the batch when it closes, also while the model
pauses. A model that answers within one interval costs no transaction of its own: `stop` ends the
timer and the last batch is written with the model call's result (`write`). The fence also notices
cancellation, which stops a stream within one interval.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy.orm import Session

from orchestrator.domain.enums import RunStatus
from orchestrator.errors import RunCancelledError
from orchestrator.store import runs
from orchestrator.store.database import Database
from orchestrator.store.events import append_event


class DeltaPublisher:
    def __init__(self, db: Database, lease: runs.Lease, turn: int, interval: float = 0.1) -> None:
        self.db = db
        self.lease = lease
        self.turn = turn
        self.interval = interval
        self._text: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self._attempt = 1
        self._lock = threading.Lock()  # held while a batch is taken and committed
        self._timer: threading.Timer | None = None
        self._failure: BaseException | None = None  # what the timer's commit raised, for the stream to raise

    def add(self, delta: dict[str, Any]) -> None:
        if self._failure is not None:
            raise self._failure
        if delta["attempt"] != self._attempt:
            self.flush()
            self._attempt = delta["attempt"]
        with self._lock:
            if delta["kind"] == "text":
                self._text.append(delta["text"])
            else:
                slot = self._calls.setdefault(delta["index"], {"index": delta["index"], "id": delta["id"],
                                                               "name": delta["name"], "arguments": ""})
                slot.update(id=delta["id"] or slot["id"], name=delta["name"] or slot["name"])
                slot["arguments"] += delta["arguments"]
            if self._timer is None:  # this delta opens a batch: it is committed when the interval ends
                self._timer = threading.Timer(self.interval, self._on_timer)
                self._timer.daemon = True
                self._timer.start()

    def _on_timer(self) -> None:
        try:
            self.flush()
        except BaseException as error:  # noqa: B036 - handed to the stream's thread, which raises it
            self._failure = error

    def flush(self) -> None:
        """Commit what is pending now, in a fenced transaction of its own."""
        with self._lock:
            self._timer = None
            if not self._text and not self._calls:
                return
            with self.db.transaction() as session:
                if runs.check_fence(session, self.lease) == RunStatus.CANCELLED:
                    raise RunCancelledError(f"run {self.lease.run_id} was cancelled")
                self._append(session)

    def stop(self) -> None:
        """The stream ended: no timer commits after this (a commit under way finishes first)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def write(self, session: Session) -> None:
        """Append what is pending in the caller's (fenced) transaction: the stream's last deltas go in
        the transaction that records the model call, not one of their own. Call `stop` first."""
        with self._lock:
            self._append(session)

    def _append(self, session: Session) -> None:
        if self._text:
            append_event(session, self.lease.session_id, "text.delta",
                         {"turn": self.turn, "attempt": self._attempt, "text": "".join(self._text)},
                         run_id=self.lease.run_id)
        for call in self._calls.values():
            append_event(session, self.lease.session_id, "tool_call.delta",
                         {"turn": self.turn, "attempt": self._attempt, **call}, run_id=self.lease.run_id)
        self._text.clear()
        self._calls.clear()
