"""The recovery sweep: finds runs nobody is working on and enqueues them again.

Two cases: a `running` run whose lease expired (its worker died or hung), and a `queued` run that
nobody claimed (its message was lost: the process that committed it died before or while talking to
Redis, a worker died holding it unacknowledged, or Redis restarted without it). Each sweeper marks
what it re-enqueues (`enqueued_at`, `dispatches`) under `SKIP LOCKED`, so several workers sweeping at
once do not pile up duplicates; a duplicate that slips through is harmless because only one task can
claim the lease.

    unclaimed for lease x 2^dispatches (at most requeue-after) since it was last enqueued -> re-enqueue
    deferred until a set time (`wake_at`: a flow step's timeout or retry back-off) that has come -> re-enqueue

So a lost message costs at most one lease plus one sweep interval, and a run that is merely waiting
in a long queue (or deferred until something else finishes) is looked at less and less often:
lease, 2 x lease, 4 x lease … requeue-after. A normal enqueue (a next turn, a decision) resets the
back-off.
"""

from __future__ import annotations

import logging

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from orchestrator.domain.enums import RunStatus
from orchestrator.jobs import task_for_kind
from orchestrator.lifecycle import Enqueue
from orchestrator.store.database import Database
from orchestrator.store.models import Run

logger = logging.getLogger(__name__)


def select_runs_to_recover(session: Session, requeue_after_seconds: float, limit: int = 100, *,
                           lease_seconds: float | None = None) -> list[tuple[str, str]]:
    first_wait = min(lease_seconds or requeue_after_seconds, requeue_after_seconds)
    back_off = func.least(first_wait * func.power(2, func.least(Run.dispatches, 20)), requeue_after_seconds)
    stale_enqueue = or_(Run.enqueued_at.is_(None),
                        Run.enqueued_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, back_off))
    expired = and_(Run.status == RunStatus.RUNNING, Run.lease_expires_at < func.now(),
                   or_(stale_enqueue, Run.enqueued_at < Run.lease_expires_at))
    lost_enqueue = and_(Run.status == RunStatus.QUEUED, stale_enqueue)
    due = and_(Run.status == RunStatus.QUEUED, Run.wake_at <= func.now())  # a deferred run's set time
    candidates = (select(Run.id).where(or_(expired, lost_enqueue, due)).order_by(Run.created_at).limit(limit)
                  .with_for_update(skip_locked=True))
    rows = session.execute(update(Run).where(Run.id.in_(candidates.scalar_subquery()))
                           .values(enqueued_at=func.now(), dispatches=Run.dispatches + 1, wake_at=None)
                           .returning(Run.id, Run.kind))
    return [(str(run_id), kind) for run_id, kind in rows]


def sweep(db: Database, enqueue: Enqueue, *, requeue_after_seconds: float, lease_seconds: float | None = None) -> int:
    with db.transaction() as session:
        found = select_runs_to_recover(session, requeue_after_seconds, lease_seconds=lease_seconds)
    for run_id, kind in found:
        logger.info("re-enqueueing run", extra={"run_id": run_id, "kind": kind})
        enqueue(task_for_kind(kind), run_id)
    return len(found)
