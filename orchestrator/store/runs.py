"""Runs and their leases.

A run is executed by whoever holds its lease: (owner, epoch, expiry) on the run row. `claim_run`
is one conditional UPDATE, so when several workers race exactly one gets the row and a new epoch;
the others see a live lease and back off. A worker renews its lease while it works; once a lease
has expired another worker may claim the run, which bumps the epoch. Every journal write checks
the epoch under a share lock of the run row (`check_fence`), so a stale worker's write is refused
before anything is written and a takeover waits for an in-flight write to commit.

Lock order everywhere: a parent run row, then the run row, then the session row (taken at commit
by the events' numbering, or earlier by `events.lock_session`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Interval, bindparam, case, func, or_, select, text, tuple_, update
from sqlalchemy.orm import Session

from orchestrator.domain.enums import TERMINAL_STATUSES, RunKind, RunStatus, StepStatus
from orchestrator.domain.failure import Failure
from orchestrator.errors import ConflictError, NotFoundError, RunCancelledError, StaleLeaseError
from orchestrator.store.events import append_event
from orchestrator.store.models import Run, Step, expire_loaded, table_of
from orchestrator.store.spans import end_open_spans

CLAIMABLE = (RunStatus.QUEUED, RunStatus.RUNNING)
# session.info: the (run, epoch) pairs fenced in this transaction. The share lock taken by the first
# check holds until commit, so neither the epoch nor the status can change under it.
FENCES_KEY = "boocode_fences"
# Kinds that advance by ticks and are woken by a finishing child (a workflow's or a flow's agents).
TICKING_KINDS = (RunKind.WORKFLOW.value, RunKind.FLOW.value)


@dataclass(frozen=True)
class Lease:
    run_id: uuid.UUID
    session_id: uuid.UUID
    project_id: uuid.UUID
    kind: str
    owner: str
    epoch: int
    claims: int
    # Takeovers of an expired lease in a row with no step finished in between (the poison-run guard),
    # and who held the lease each time.
    crashes: int = 0
    crash_log: tuple[dict[str, Any], ...] = ()
    parent_id: uuid.UUID | None = None  # a child run's workflow or flow (a run's parent never changes)


def serialize_run(run: Run) -> dict[str, Any]:
    def stamp(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {"id": str(run.id), "project_id": str(run.project_id), "session_id": str(run.session_id),
            "parent_id": str(run.parent_id) if run.parent_id else None, "kind": run.kind, "status": run.status,
            "input": run.input, "result": run.result, "error": run.error, "created_at": stamp(run.created_at),
            "started_at": stamp(run.started_at), "finished_at": stamp(run.finished_at),
            "lease": {"owner": run.lease_owner, "epoch": run.lease_epoch,
                      "expires_at": stamp(run.lease_expires_at)},
            "claims": run.claims}


def create_run(session: Session, *, project_id: uuid.UUID, session_id: uuid.UUID, kind: str,
               input: dict[str, Any], created_by: uuid.UUID | None, parent_id: uuid.UUID | None = None,
               run_id: uuid.UUID | None = None, flush: bool = True) -> Run:
    """A queued run and its `run.queued` event. Without `flush` the caller flushes before the commit (its
    event row refers to the run), so runs made together are inserted in one statement."""
    now = datetime.now(timezone.utc)
    run = Run(id=run_id or uuid.uuid4(), project_id=project_id, session_id=session_id, kind=kind, input=input,
              created_by=created_by, parent_id=parent_id, status=RunStatus.QUEUED, created_at=now,
              updated_at=now, enqueued_at=now, lease_epoch=0, claims=0)
    session.add(run)
    if flush:
        session.flush()
    append_event(session, session_id, "run.queued", {"kind": kind, "parent_id": str(parent_id) if parent_id else None},
                 run_id=run.id)
    return run


def load_run(session: Session, run_id: uuid.UUID) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id} does not exist")
    return run


def list_runs(session: Session, *, project_id: uuid.UUID | None = None, session_id: uuid.UUID | None = None,
              status: str | None = None, limit: int = 50) -> list[Run]:
    query = select(Run)
    if project_id is not None:
        query = query.where(Run.project_id == project_id)
    if session_id is not None:
        query = query.where(Run.session_id == session_id)
    if status is not None:
        query = query.where(Run.status == status)
    return list(session.scalars(query.order_by(Run.created_at.desc(), Run.id).limit(limit)))


_RUNS = table_of(Run)
_STEPS = table_of(Step)


def _claim_statement() -> Any:
    """The claim (one conditional UPDATE), built once: every task of every run starts with it."""
    run_id = bindparam("run", type_=_RUNS.c.id.type)
    prior = select(_RUNS.c.id, _RUNS.c.status).where(_RUNS.c.id == run_id).with_for_update().subquery()
    # Taking over an expired lease means its holder died or hung: count it, unless a step finished since
    # the last takeover (progress). The count of finished steps is read only on a takeover.
    takeover = prior.c.status == RunStatus.RUNNING.value
    finished = (select(func.count()).select_from(_STEPS)
                .where(_STEPS.c.run_id == run_id, _STEPS.c.status != StepStatus.STARTED.value).scalar_subquery())
    evidence = func.jsonb_build_array(func.jsonb_build_object("owner", _RUNS.c.lease_owner,
                                                              "lease_expired_at", _RUNS.c.lease_expires_at))
    return (update(_RUNS)
            .where(_RUNS.c.id == prior.c.id, _RUNS.c.status.in_([status.value for status in CLAIMABLE]),
                   or_(_RUNS.c.lease_expires_at.is_(None), _RUNS.c.lease_expires_at < func.now()))
            .values(status=RunStatus.RUNNING.value, lease_owner=bindparam("owner", type_=_RUNS.c.lease_owner.type),
                    lease_epoch=_RUNS.c.lease_epoch + 1,
                    lease_expires_at=func.now() + bindparam("lease", type_=Interval()),
                    started_at=func.coalesce(_RUNS.c.started_at, func.now()), claims=_RUNS.c.claims + 1,
                    updated_at=func.now(),
                    crashes=case((takeover, case((_RUNS.c.progress_mark == finished, _RUNS.c.crashes + 1), else_=1)),
                                 else_=0),
                    progress_mark=case((takeover, finished), else_=None),
                    crash_log=case((takeover, case((_RUNS.c.progress_mark == finished,
                                                    func.coalesce(_RUNS.c.crash_log, text("'[]'::jsonb"))
                                                    .op("||")(evidence)),
                                                   else_=evidence)),
                                   else_=None))
            .returning(_RUNS.c.session_id, _RUNS.c.project_id, _RUNS.c.parent_id, _RUNS.c.kind, _RUNS.c.lease_epoch,
                       _RUNS.c.claims, _RUNS.c.crashes, _RUNS.c.crash_log, prior.c.status.label("prior_status")))


_CLAIM = _claim_statement()


def claim_run(session: Session, run_id: uuid.UUID, owner: str, lease_seconds: float) -> Lease | None:
    """Take the run's lease if it is free or expired; None if someone else holds it or the run is done.

    The event says what kind of claim it was: `run.started` (first), `run.resumed` (taking over an
    expired lease from a worker that died); a continuation (the next turn) emits nothing here.
    """
    row = session.execute(_CLAIM, {"run": run_id, "owner": owner,
                                   "lease": timedelta(seconds=lease_seconds)}).one_or_none()
    if row is None:
        return None
    expire_loaded(session, Run, run_id)
    lease = Lease(run_id=run_id, session_id=row.session_id, project_id=row.project_id, kind=row.kind, owner=owner,
                  epoch=row.lease_epoch, claims=row.claims, crashes=row.crashes, crash_log=tuple(row.crash_log or ()),
                  parent_id=row.parent_id)
    if lease.claims == 1:
        append_event(session, lease.session_id, "run.started", {"epoch": lease.epoch, "owner": owner}, run_id=run_id)
    elif row.prior_status == RunStatus.RUNNING:
        expired = lease.crash_log[-1].get("lease_expired_at") if lease.crash_log else None
        append_event(session, lease.session_id, "run.resumed",
                     {"epoch": lease.epoch, "owner": owner, "lease_expired_at": expired}, run_id=run_id)
    return lease


NOW = object()  # a value for `_update_held`: the transaction's now()
_HELD: dict[tuple[tuple[str, bool], ...], Any] = {}  # `_update_held`'s statements, by the columns they set


def _held_statement(values: dict[str, Any]) -> Any:
    shape = tuple(sorted((name, value is NOW) for name, value in values.items()))
    statement = _HELD.get(shape)
    if statement is None:  # a handful of shapes (hand-back, park, finish, renewal), each built once
        statement = (update(_RUNS).where(_RUNS.c.id == bindparam("run", type_=_RUNS.c.id.type),
                                         _RUNS.c.lease_epoch == bindparam("epoch", type_=_RUNS.c.lease_epoch.type),
                                         _RUNS.c.status == RunStatus.RUNNING.value)
                     .values({name: func.now() if now else bindparam(f"set_{name}", type_=_RUNS.c[name].type)
                              for name, now in shape})
                     .returning(_RUNS.c.id))
        _HELD[shape] = statement
    return statement


def _update_held(session: Session, lease: Lease, **values: Any) -> None:
    """Update the run only while `lease` still holds it (same epoch, still running); otherwise raise
    `RunCancelledError` (cancelled meanwhile) or `StaleLeaseError` (someone else holds it now).
    A value may be `NOW`, the transaction's now()."""
    session.info.pop(FENCES_KEY, None)  # the status may change here: fence afresh afterwards
    parameters = {f"set_{name}": value for name, value in values.items() if value is not NOW}
    updated = session.execute(_held_statement(values),
                              {"run": lease.run_id, "epoch": lease.epoch, **parameters}).one_or_none()
    expire_loaded(session, Run, lease.run_id)
    if updated is None:
        _raise_lost(session, lease)


def _release_unless_cancelled(session: Session, lease: Lease, **values: Any) -> bool:
    """`_update_held`, but a run cancelled meanwhile is a normal end: False, nothing written."""
    try:
        _update_held(session, lease, lease_owner=None, lease_expires_at=None, updated_at=NOW, **values)
    except RunCancelledError:
        return False
    return True


def requeue_run(session: Session, lease: Lease, *, deferred: bool = False, wake_at: datetime | None = None) -> bool:
    """Give the lease back with the run still to do (its next turn, or waiting behind another run).
    True when the caller should enqueue it; False when it was cancelled meanwhile. A deferred run
    (someone else wakes it) keeps its sweep back-off, so the sweep looks at it less and less often;
    with `wake_at` the sweep enqueues it then at the latest, whatever its back-off."""
    back_off = {} if deferred else {"dispatches": 0}
    return _release_unless_cancelled(session, lease, status=RunStatus.QUEUED, enqueued_at=NOW,
                                     wake_at=wake_at, **back_off)


def park_run(session: Session, lease: Lease) -> bool:
    """Hand the lease back and wait for a person (an approval). True when the caller must enqueue the run
    after all: every approval it waited for was decided meanwhile. False when it is parked (or was
    cancelled meanwhile): nothing to enqueue."""
    from orchestrator.store.approvals import pending_count  # approvals builds on runs

    if not _release_unless_cancelled(session, lease, status=RunStatus.WAITING):
        return False
    if pending_count(session, lease.run_id) == 0:
        session.execute(update(Run).where(Run.id == lease.run_id)
                        .values(status=RunStatus.QUEUED, enqueued_at=func.now(), dispatches=0))
        return True
    append_event(session, lease.session_id, "run.waiting", {"reason": "approval"}, run_id=lease.run_id)
    return False


def lock_parent(session: Session, lease: Lease) -> uuid.UUID | None:
    """Lock the run's parent row, if it has one. Called before anything else in a transaction that
    finishes a child, so locks are taken parent, child, session (the order a workflow tick and a
    cascading cancel use) and the two never deadlock."""
    if lease.parent_id is not None:
        session.execute(_LOCK, {"run": lease.parent_id})
    return lease.parent_id


# built once, like the claim: every child's end and every tick run these
_RUN_ID = bindparam("run", type_=_RUNS.c.id.type)
_LOCK = select(_RUNS.c.id).where(_RUNS.c.id == _RUN_ID).with_for_update()
_KIND = select(_RUNS.c.kind).where(_RUNS.c.id == _RUN_ID)
_TAKE_TICK = (update(_RUNS).where(_RUNS.c.id == _RUN_ID,
                                  _RUNS.c.lease_epoch == bindparam("epoch", type_=_RUNS.c.lease_epoch.type))
              .values(tick_pending=False))


def parent_to_wake(session: Session, parent_id: uuid.UUID) -> Run | None:
    """The unfinished workflow a finished child belongs to, if it must be enqueued to see the result.

    Many children finishing at once ask for one tick: the first sets `tick_pending`, the others see it
    set; the tick clears it as it starts (`take_tick`), and a tick that ends while children finished
    meanwhile goes on by itself (RunOutcome.wake). A workflow is woken only once its tick is due
    (`workflows.tick_is_due`: a quarter of its running agents finished, or all). Lock the parent first
    (`lock_parent`)."""
    from orchestrator.store.workflows import tick_is_due  # workflows builds on runs

    kind = session.scalar(_KIND, {"run": parent_id})
    if kind == RunKind.WORKFLOW.value and not tick_is_due(session, parent_id):
        return None
    return session.scalar(update(Run).where(Run.id == parent_id, Run.kind.in_(TICKING_KINDS),
                                            Run.status.in_(CLAIMABLE), Run.tick_pending.is_(False))
                          .values(tick_pending=True).returning(Run))


def take_tick(session: Session, lease: Lease) -> None:
    """A tick starts: children finishing from now on must ask for the next one."""
    session.execute(_TAKE_TICK, {"run": lease.run_id, "epoch": lease.epoch})
    expire_loaded(session, Run, lease.run_id)


def mark_replayed(session: Session, lease: Lease, at: datetime) -> None:
    """A workflow tick replayed its script (at the start of the replay)."""
    session.execute(update(Run).where(Run.id == lease.run_id, Run.lease_epoch == lease.epoch)
                    .values(replayed_at=at, replays=Run.replays + 1))


def next_queued_run(session: Session, session_id: uuid.UUID, kind: str) -> Run | None:
    """The oldest queued top-level run of `kind` in a session: who goes next when a run there finishes.
    (Child runs, such as a workflow's agents, run side by side and never queue behind each other.)"""
    return session.scalar(select(Run).where(Run.session_id == session_id, Run.kind == kind,
                                            Run.parent_id.is_(None), Run.status == RunStatus.QUEUED)
                          .order_by(Run.created_at, Run.id).limit(1))


def earlier_unfinished_run(session: Session, run: Run, *, lock: bool = False) -> Run | None:
    """An unfinished run of the same kind created before `run` in its session (top-level runs there go one
    at a time; child runs never wait for one another).

    With `lock` (the wake check of a run deferred behind it) the row is locked, so this waits for a
    transaction finishing that run and then sees it finished: the finishing transaction's look for the
    next queued run and this look cannot both miss each other (the lost wake-up of a follow-up)."""
    if run.parent_id is not None:
        return None
    # (created_at, id) is a total order: runs created in the same instant still go one after the other
    query = (select(Run).where(Run.session_id == run.session_id, Run.kind == run.kind, Run.parent_id.is_(None),
                               tuple_(Run.created_at, Run.id) < tuple_(run.created_at, run.id),
                               Run.status.in_([RunStatus.QUEUED, RunStatus.RUNNING,
                                               RunStatus.WAITING]))
             .order_by(Run.created_at, Run.id).limit(1))
    return session.scalar(query.with_for_update() if lock else query)


def renew_lease(session: Session, lease: Lease, lease_seconds: float) -> None:
    """Extend the lease; raise `RunCancelledError` or `StaleLeaseError` when it is no longer ours."""
    session.info.pop(FENCES_KEY, None)
    renewed = session.execute(_RENEW, {"run": lease.run_id, "epoch": lease.epoch,
                                       "lease": timedelta(seconds=lease_seconds)}).one_or_none()
    if renewed is None:
        _raise_lost(session, lease)


_RENEW = (update(_RUNS).where(_RUNS.c.id == bindparam("run", type_=_RUNS.c.id.type),
                              _RUNS.c.lease_epoch == bindparam("epoch", type_=_RUNS.c.lease_epoch.type),
                              _RUNS.c.status == RunStatus.RUNNING.value)
          .values(lease_expires_at=func.clock_timestamp() + bindparam("lease", type_=Interval()))
          .returning(_RUNS.c.id))


# built once (every transaction of a lease holder runs it): see store/spans.py
_FENCE = (select(_RUNS.c.lease_epoch, _RUNS.c.status).where(_RUNS.c.id == bindparam("run", type_=_RUNS.c.id.type))
          .with_for_update(read=True))


def check_fence(session: Session, lease: Lease) -> str:
    """Refuse a write by a stale lease holder; return the run's status. Holds a share lock on the run row
    until commit."""
    fenced = session.info.setdefault(FENCES_KEY, {})
    if (lease.run_id, lease.epoch) in fenced:  # checked in this transaction: the share lock still holds
        return str(fenced[(lease.run_id, lease.epoch)])
    row = session.execute(_FENCE, {"run": lease.run_id}).one_or_none()
    if row is None or row.lease_epoch != lease.epoch:
        raise StaleLeaseError(f"run {lease.run_id}: epoch {lease.epoch} is stale "
                              f"(current {row.lease_epoch if row else 'none'}); write refused")
    fenced[(lease.run_id, lease.epoch)] = row.status
    return str(row.status)


def finish_run(session: Session, lease: Lease, status: RunStatus, *, result: Any = None,
               error: dict[str, Any] | None = None) -> bool:
    """Record the run's outcome exactly once. False if the run was cancelled meanwhile (outcome kept)."""
    assert status in TERMINAL_STATUSES
    if not _release_unless_cancelled(session, lease, status=status.value, result=result, error=error,
                                     finished_at=NOW):
        return False
    append_event(session, lease.session_id, "run.finished",
                 {"status": status.value, "error": error, "result": result}, run_id=lease.run_id)
    if lease.kind == RunKind.WORKFLOW:  # however it ended, agents still waiting for a slot never start
        from orchestrator.store.workflows import cancel_queued  # workflows builds on runs

        cancel_queued(session, [lease.run_id], f"the workflow ended ({status.value}) before this agent started")
    return True


def cancel_run(session: Session, run_id: uuid.UUID, *, reason: str = "cancelled by a user") -> Run:
    """Cancel a run and its unfinished descendants. The lease holder notices at its next renewal."""
    session.info.pop(FENCES_KEY, None)
    run = session.get(Run, run_id, with_for_update=True, populate_existing=True)
    if run is None:
        raise NotFoundError(f"run {run_id} does not exist")
    if RunStatus(run.status).is_terminal:
        raise ConflictError(f"run {run_id} already finished with status {run.status}",
                            details={"status": run.status})
    # Every row lock first, parents before children, and only then the events (which lock the session
    # row): the order parent, child, session that finishing children and workflow ticks use. Writing
    # the parent's event before locking a child deadlocked with a child finishing at that moment.
    tree = [run]
    frontier = [run.id]
    while frontier:
        children = list(session.scalars(select(Run).where(Run.parent_id.in_(frontier)).order_by(Run.id)
                                        .with_for_update()))
        tree.extend(children)
        frontier = [child.id for child in children]
    for current in tree:
        if RunStatus(current.status).is_terminal:
            continue
        current.status = RunStatus.CANCELLED
        current.error = Failure("cancelled", reason).to_dict()
        current.finished_at = datetime.now(timezone.utc)
        current.updated_at = current.finished_at
        current.lease_expires_at = None
        session.flush()
        end_open_spans(session, current.id, "cancelled")
        append_event(session, current.session_id, "run.finished",
                     {"status": RunStatus.CANCELLED, "error": current.error, "result": None},
                     run_id=current.id)
    if any(current.kind == "workflow" for current in tree):
        from orchestrator.store.workflows import settle_cancelled  # workflows builds on runs

        settle_cancelled(session, tree, reason)
    return run


def _raise_lost(session: Session, lease: Lease) -> None:
    row = session.execute(select(Run.status, Run.lease_epoch).where(Run.id == lease.run_id)).one_or_none()
    if row is not None and row.lease_epoch == lease.epoch and row.status == RunStatus.CANCELLED:
        raise RunCancelledError(f"run {lease.run_id} was cancelled")
    raise StaleLeaseError(f"run {lease.run_id}: lease epoch {lease.epoch} is no longer current "
                          f"(status {row.status if row else 'missing'}, epoch {row.lease_epoch if row else '-'})")
