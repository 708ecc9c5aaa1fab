"""Executing a run under its lease: the helper every task kind goes through.

    execute_run(run_id):
        claim the lease and read the run and its journal (one transaction; lose the race -> return)
        taken over from dead holders max_crashes times in a row without progress -> fail `worker_crashed`
        start a keeper thread that renews the lease every lease_seconds / 3
        call the kind's handler with a RunContext
            ctx.step(key, body): journal hit -> recorded output; else started -> body -> finished
            ctx.check(): raise if the run was cancelled or the lease was lost
        Continue while nothing else waits for a worker and the time slice lasts -> call it again
            (the next turn in this task: no hand-back, no new task, no new claim; ADR 0006)
        record the outcome once (finish_run is fenced), stop the keeper

A handler's expected failures are data (`RunOutcome` with an error); an exception it raises is
recorded as a failed run, except a lost database connection: that is an infrastructure fault, so
the run is left to its lease and the recovery sweep resumes it from the journal. A lost lease
records nothing: the new holder owns the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from orchestrator.domain.enums import RunStatus, StepStatus
from orchestrator.domain.failure import Failure, as_dict
from orchestrator.errors import LeaseError, RunCancelledError, StaleLeaseError
from orchestrator.jobs import task_for_kind
from orchestrator.store import journal, runs, spans, subagents
from orchestrator.store.database import Database
from orchestrator.store.models import Run

logger = logging.getLogger(__name__)

Enqueue = Callable[[str, str], None]


@dataclass(frozen=True)
class Finish:
    """The run ends with this status (terminal), result and error. `record(session)`, if given, runs in
    the transaction that records the outcome (a handler closes its spans there)."""

    status: RunStatus = RunStatus.COMPLETED
    result: Any = None
    error: Failure | dict[str, Any] | None = None
    record: Callable[[Session], None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Continue:
    """Hand the lease back and enqueue this run's next task at once (its next turn)."""


@dataclass(frozen=True)
class Defer:
    """Back to queued without enqueueing: something else wakes it (a child finishing, a slot freed).
    `wake` is asked in the transaction that hands the lease back; True means what the run waits for
    happened meanwhile (its wake-up call may have found the lease still held), so go on at once."""

    wake: Callable[[Session], bool] | None = None
    wake_at: datetime | None = None  # and at the latest then (the recovery sweep enqueues it)


@dataclass(frozen=True)
class Park:
    """Wait for a person (an approval); whoever decides re-queues the run."""


# What a handler asks for: one of four cases, never a combination of flags.
RunOutcome = Finish | Continue | Defer | Park


class LeaseKeeper:
    """Renews a lease in the background; remembers why it was lost so the handler can stop."""

    def __init__(self, db: Database, lease: runs.Lease, lease_seconds: float) -> None:
        self.db = db
        self.lease = lease
        self.lease_seconds = lease_seconds
        self.lost: LeaseError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_until_stopped, name=f"lease-{lease.run_id}", daemon=True)

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.lease_seconds)

    def renew(self) -> None:
        try:
            with self.db.transaction() as session:
                runs.renew_lease(session, self.lease, self.lease_seconds)
        except LeaseError as error:
            self.lost = error

    def _renew_until_stopped(self) -> None:
        interval = max(self.lease_seconds / 3, 0.05)
        while not self._stop.wait(interval) and self.lost is None:
            try:
                self.renew()
            except Exception:  # Postgres hiccup: keep trying until the lease would expire
                logger.warning("lease renewal failed", extra={"run_id": str(self.lease.run_id)}, exc_info=True)

    def raise_if_lost(self) -> None:
        if self.lost is not None:
            raise self.lost


@dataclass
class RunContext:
    """What a handler sees: its run, its journal (`steps`, read at the claim and kept up to date by
    `step`), journaled steps, and the way to check it may go on."""

    db: Database
    lease: runs.Lease
    run: Run
    keeper: LeaseKeeper
    enqueue: Enqueue
    steps: dict[str, journal.Entry] = field(default_factory=dict)
    journal_hits: int = field(default=0)
    turns_in_task: int = field(default=0)  # handler calls this task made before the current one (ADR 0006)
    # what a handler keeps from one of this task's turns to the next (the lease is held throughout, so
    # nobody else wrote the run meanwhile); a new task starts empty
    carried: dict[str, Any] = field(default_factory=dict)
    # how a step may end the run in its own transaction (`step(..., ends=...)`), and what it recorded
    on_finish: dict[str, "FinishHook"] | None = field(default=None, compare=False)
    ended: "Ended | None" = field(default=None)

    def check(self) -> None:
        self.keeper.raise_if_lost()

    def step(self, step_key: str, body: Callable[[], Any], *, kind: str = "step", input: Any = None,
             record: Callable[[Session, Any], None] | None = None,
             interrupted: Callable[[], Any] | None = None,
             begin: Callable[[Session], None] | None = None,
             ends: Callable[[Any], "Finish | None"] | None = None, begun: bool = False) -> Any:
        """Run `body` once per journal entry: a recorded result is returned without running it again.

        `record(session, output)` runs in the transaction that journals the result, so what it writes
        (a message, say) exists exactly when the result does. `interrupted`, given for steps with side
        effects, supplies the output to record instead of running the body again when a previous
        attempt started but never finished (a crash in the middle). `begin(session)` runs in the
        transaction that journals `started` (a span opens there), so nothing can fail between that
        commit and the body: a step is `started` only when its body is about to run. `ends(output)`,
        asked before the result is journaled, may say the result ends the run: then the run's end is
        recorded in the same transaction (`ended` holds it; the handler returns that Finish), so a last
        step costs no transaction of its own. `begun`: the caller journaled `started` in a transaction of
        its own that committed (`journal_started`), having decided from the journal that the body runs.
        """
        self.check()
        if begun:
            return self._run(step_key, body, record, ends)
        recorded = self.steps.get(step_key)
        if recorded is not None and recorded.status in (StepStatus.FINISHED, StepStatus.INTERRUPTED):
            self.journal_hits += 1
            return recorded.output
        if recorded is not None and recorded.status == StepStatus.STARTED and interrupted is not None:
            output = interrupted()
            self._finish(step_key, output, record, StepStatus.INTERRUPTED, ends)
            return output
        with self.db.transaction() as session:
            self.journal_started(session, step_key, kind=kind, input=input, begin=begin)
        return self._run(step_key, body, record, ends)

    def journal_started(self, session: Session, step_key: str, *, kind: str = "step", input: Any = None,
                        begin: Callable[[Session], None] | None = None) -> None:
        """Journal `started` (and run `begin`) in the caller's transaction; once it commits, run the body
        with `step(..., begun=True)`. Lets a handler read what the step needs in the same transaction."""
        journal.begin_step(session, self.lease, step_key, kind=kind,
                           input_hash=hash_input(input) if input is not None else None,
                           detail=input if isinstance(input, dict) else None)
        if begin is not None:
            begin(session)

    def _run(self, step_key: str, body: Callable[[], Any], record: Callable[[Session, Any], None] | None,
             ends: Callable[[Any], "Finish | None"] | None) -> Any:
        """The body of a step journaled `started`, then its result (or failure)."""
        self.steps[step_key] = journal.Entry(StepStatus.STARTED)
        try:
            output = body()
        except Exception as error:
            if isinstance(error, (LeaseError, OperationalError, InterfaceError)):
                raise  # not the step's failure: the run resumes (or stops) from the journal
            with self.db.transaction() as session:
                journal.finish_step(session, self.lease, step_key, status=StepStatus.FAILED,
                                    error={"type": type(error).__name__, "message": str(error)})
            self.steps[step_key] = journal.Entry(StepStatus.FAILED)
            raise
        self._finish(step_key, output, record, StepStatus.FINISHED, ends)
        return output

    def _finish(self, step_key: str, output: Any, record: Callable[[Session, Any], None] | None,
                status: StepStatus, ends: Callable[[Any], "Finish | None"] | None) -> None:
        """Journal the result with what `record` writes, in one transaction (what it writes comes first
        in the event log, then `step.finished`), and the run's end too when `ends` says so."""
        finish = ends(output) if ends is not None else None
        with self.db.transaction() as session:
            parent_id = runs.lock_parent(session, self.lease) if finish is not None else None  # parent first
            runs.check_fence(session, self.lease)  # the run row before the session row (lock order)
            if record is not None:
                record(session, output)
            journal.finish_step(session, self.lease, step_key, output=output, status=status)
            going = _record_end(session, self.lease, parent_id, finish, self.on_finish) if finish is not None else []
        self.steps[step_key] = journal.Entry(status.value, output)
        if finish is not None:
            self.ended = Ended(finish, going)


@dataclass(frozen=True)
class Ended:
    """A run's end recorded with its last step (`RunContext.step(..., ends=...)`) and what it sets going."""

    outcome: Finish
    going: list[Run]


Handler = Callable[[RunContext], RunOutcome]
# Runs a kind's end sets going (a follow-up turn, a subagent that now has a slot), decided in the
# transaction that records the outcome; they are enqueued after it commits.
FinishHook = Callable[[Session, runs.Lease], list[Run]]


def hash_input(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def set_going_by_end(session: Session, ended_session_id: uuid.UUID, kind: str, parent_id: uuid.UUID | None,
                     started: list[Run]) -> list[Run]:
    """What any end of a run sets going, besides its kind's own (`started`): the next queued run of its
    session (top-level runs there go one at a time) and its parent workflow's next tick (asked once,
    `parent_to_wake`). In the transaction that ended the run; the caller enqueues after the commit.
    The parent row must have been locked first (`runs.lock_parent`)."""
    going = {run.id: run for run in started}
    # child runs never queue behind each other, so only a top-level run's end lets the next one go
    following = runs.next_queued_run(session, ended_session_id, kind) if parent_id is None else None
    if following is not None:
        going[following.id] = following
    parent = runs.parent_to_wake(session, parent_id) if parent_id else None
    if parent is not None:
        going[parent.id] = parent
    return list(going.values())


def cancel(session: Session, run_id: uuid.UUID, limits: subagents.Limits, *,
           reason: str = "cancelled by a user") -> tuple[Run, list[Run]]:
    """Cancel a run and its unfinished descendants (the one way to, for people and agents alike) and
    decide what that sets going, exactly as a run's own end does: its parent's next tick, the next
    run of its session, a follow-up with finished results, subagents waiting for the slots it freed.
    Locks the parent first, then the run tree (the order ticks and finishing children use)."""
    parent_id = session.scalar(select(Run.parent_id).where(Run.id == run_id))
    if parent_id is not None:
        session.execute(select(Run.id).where(Run.id == parent_id).with_for_update())
    run = runs.cancel_run(session, run_id, reason=reason)
    return run, set_going_by_end(session, run.session_id, run.kind, parent_id,
                                 subagents.after_cancel(session, run, limits))


def crash_failure(session: Session, lease: runs.Lease) -> Failure:
    """The poison-run guard's error: the run's executions keep killing (or hanging) their workers."""
    last = journal.latest_step(session, lease.run_id)
    step = {"step_key": last.step_key, "status": last.status, "attempt": last.attempt} if last else None
    return Failure("worker_crashed",
                   f"the worker running this run died {lease.crashes} times in a row without the run making "
                   f"progress{f' (each time in step {last.step_key})' if last else ''}; it was stopped so it "
                   "cannot take workers down forever (BOOCODE_MAX_WORKER_CRASHES)",
                   details={"crashes": lease.crashes, "holders": list(lease.crash_log), "last_step": step})


@dataclass(frozen=True)
class TimeSlice:
    """How long a task may keep its run going from one turn to the next (ADR 0006): while `others_waiting`
    says no other task waits for a worker, and for at most `seconds`. 0 seconds: one turn per task."""

    seconds: float = 0.0
    others_waiting: Callable[[], bool] = field(default=lambda: True, compare=False)

    def allows(self, started: float) -> bool:
        return time.monotonic() - started < self.seconds and not self.others_waiting()


def execute_run(db: Database, run_id: uuid.UUID, *, owner: str, lease_seconds: float,
                handlers: dict[str, Handler], enqueue: Enqueue,
                on_finish: dict[str, FinishHook] | None = None, max_crashes: int = 3,
                time_slice: TimeSlice = TimeSlice()) -> str:
    """Claim and run one run. Returns what happened: claimed-and-finished, skipped, or lost."""
    with db.transaction() as session:
        lease = runs.claim_run(session, run_id, owner, lease_seconds)
        run = runs.load_run(session, run_id) if lease else None
        steps = journal.entries(session, run_id) if lease else {}
    if lease is None or run is None:
        return "skipped"
    log_extra = {"run_id": str(run_id), "epoch": lease.epoch, "kind": lease.kind}
    logger.info("claimed run", extra=log_extra)
    with LeaseKeeper(db, lease, lease_seconds) as keeper:
        context = RunContext(db=db, lease=lease, run=run, keeper=keeper, enqueue=enqueue, steps=steps,
                             on_finish=on_finish)
        started = time.monotonic()
        while True:
            outcome = _handle(context, handlers.get(lease.kind), sorted(handlers), max_crashes, log_extra)
            if not (isinstance(outcome, Continue) and time_slice.allows(started)):
                break
            context.turns_in_task += 1  # the lease is still ours: the next turn's first write is fenced
        if context.ended is not None:  # recorded with the last step, whatever happened since
            for run_to_start in context.ended.going:
                enqueue(task_for_kind(run_to_start.kind), str(run_to_start.id))
            return "finished"
        if isinstance(outcome, str):
            return outcome
        try:
            with db.transaction() as session:
                outcome, handed_back, going = _record_outcome(session, lease, outcome, on_finish)
        except StaleLeaseError:
            logger.warning("lost the lease before recording the outcome", extra=log_extra)
            return "lost"
    if isinstance(outcome, (Continue, Park)):
        if handed_back:
            enqueue(task_for_kind(lease.kind), str(run_id))
        return "waiting" if isinstance(outcome, Park) and not handed_back else "continued"
    if isinstance(outcome, Defer):
        return "deferred"
    for run_to_start in going:  # a parent's next tick, the session's next run, the kind's own
        enqueue(task_for_kind(run_to_start.kind), str(run_to_start.id))
    return "finished"


def _handle(context: RunContext, handler: Handler | None, known: list[str], max_crashes: int,
            log_extra: dict[str, Any]) -> RunOutcome | str:
    """The handler's outcome, or what ended the task instead: cancelled, lost or interrupted."""
    lease = context.lease
    try:
        if lease.crashes >= max_crashes:
            logger.error("run failed: it crashed its worker too often", extra={**log_extra, "crashes": lease.crashes})
            with context.db.transaction() as session:
                error = crash_failure(session, lease)
            return Finish(RunStatus.FAILED, error=error,
                          record=lambda session: spans.end_open_spans(session, lease.run_id, "error"))
        if handler is None:
            return Finish(RunStatus.FAILED, error=Failure(
                "unsupported_run_kind",
                f"this server has no executor for runs of kind {lease.kind!r}; known kinds: {', '.join(known)}"))
        outcome = handler(context)
        context.keeper.raise_if_lost()
        return outcome
    except RunCancelledError:
        logger.info("run was cancelled while running", extra=log_extra)
        return "cancelled"
    except StaleLeaseError:
        logger.warning("lost the lease; another worker owns the run now", extra=log_extra)
        return "lost"
    except (OperationalError, InterfaceError):
        logger.warning("database unreachable mid-run; the run resumes after its lease expires",
                       extra=log_extra, exc_info=True)
        return "interrupted"
    except Exception as error:
        logger.exception("run failed", extra=log_extra)
        return Finish(RunStatus.FAILED, error=Failure("internal_error", str(error),
                                                      context={"type": type(error).__name__}))


def _record_outcome(session: Session, lease: runs.Lease, outcome: RunOutcome,
                    on_finish: dict[str, FinishHook] | None) -> tuple[RunOutcome, bool, list[Run]]:
    """Hand the lease back as the outcome says, in the caller's transaction: (the outcome, whether the
    run must be enqueued again, the runs its end sets going)."""
    if isinstance(outcome, Park):
        return outcome, runs.park_run(session, lease), []  # True: decided meanwhile, go on at once
    if isinstance(outcome, (Continue, Defer)):
        deferred = isinstance(outcome, Defer)
        handed_back = runs.requeue_run(session, lease, deferred=deferred,
                                       wake_at=outcome.wake_at if isinstance(outcome, Defer) else None)
        if handed_back and isinstance(outcome, Defer) and outcome.wake is not None and outcome.wake(session):
            return Continue(), True, []
        return outcome, handed_back, []
    parent_id = runs.lock_parent(session, lease)
    runs.check_fence(session, lease)  # the run row before the session row, which `record` may lock
    return outcome, False, _record_end(session, lease, parent_id, outcome, on_finish)


def _record_end(session: Session, lease: runs.Lease, parent_id: uuid.UUID | None, outcome: Finish,
                on_finish: dict[str, FinishHook] | None) -> list[Run]:
    """Record the run's end (the parent, if any, and the run row already locked, in that order): the
    runs it sets going."""
    if outcome.record is not None:
        outcome.record(session)
    recorded = runs.finish_run(session, lease, outcome.status, result=outcome.result, error=as_dict(outcome.error))
    hook = (on_finish or {}).get(lease.kind)
    return set_going_by_end(session, lease.session_id, lease.kind, parent_id,
                            hook(session, lease) if recorded and hook is not None else [])
