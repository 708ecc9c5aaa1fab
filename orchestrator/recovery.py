"""The recovery sweep: finds runs nobody is working on and enqueues them again.

Two cases: a `running` run whose lease expired (its worker died or hung), and a `queued` run whose
enqueue was lost (the process that committed it died before or while talking to Redis). Each
sweeper marks what it re-enqueues (`enqueued_at`) under `SKIP LOCKED`, so several workers sweeping
at once do not pile up duplicates; a duplicate that slips through is harmless because only one
task can claim the lease.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from orchestrator.domain.enums import RunStatus
from orchestrator.jobs import task_for_kind
from orchestrator.lifecycle import Enqueue
from orchestrator.store.database import Database
from orchestrator.store.models import Run

logger = logging.getLogger(__name__)


def select_runs_to_recover(session: Session, requeue_after_seconds: float, limit: int = 100) -> list[tuple[str, str]]:
    stale_enqueue = or_(Run.enqueued_at.is_(None),
                        Run.enqueued_at < func.now() - timedelta(seconds=requeue_after_seconds))
    expired = and_(Run.status == RunStatus.RUNNING.value, Run.lease_expires_at < func.now(),
                   or_(stale_enqueue, Run.enqueued_at < Run.lease_expires_at))
    lost_enqueue = and_(Run.status == RunStatus.QUEUED.value, stale_enqueue)
    candidates = (select(Run.id).where(or_(expired, lost_enqueue)).order_by(Run.created_at).limit(limit)
                  .with_for_update(skip_locked=True))
    rows = session.execute(update(Run).where(Run.id.in_(candidates.scalar_subquery()))
                           .values(enqueued_at=func.now()).returning(Run.id, Run.kind))
    return [(str(run_id), kind) for run_id, kind in rows]


def sweep(db: Database, enqueue: Enqueue, *, requeue_after_seconds: float) -> int:
    with db.transaction() as session:
        found = select_runs_to_recover(session, requeue_after_seconds)
    for run_id, kind in found:
        logger.info("re-enqueueing run", extra={"run_id": run_id, "kind": kind})
        enqueue(task_for_kind(kind), run_id)
    return len(found)
