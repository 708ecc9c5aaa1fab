"""The journal: one row per `(run_id, step_key)`.

A step is written `started` before its body runs and `finished` (or `failed`) after, each write
fenced by the lease epoch. A step body may run more than once (a crash between body and record);
its recorded result is written exactly once: `finish_step` only moves a `started` row.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from orchestrator.domain.enums import StepStatus
from orchestrator.errors import ConflictError
from orchestrator.store.events import append_event
from orchestrator.store.models import Step
from orchestrator.store.runs import Lease, check_fence


def serialize_step(step: Step) -> dict[str, Any]:
    return {"step_key": step.step_key, "kind": step.kind, "status": step.status, "input_hash": step.input_hash,
            "output": step.output, "error": step.error, "attempt": step.attempt, "epoch": step.epoch,
            "started_at": step.started_at.isoformat(),
            "finished_at": step.finished_at.isoformat() if step.finished_at else None}


@dataclass(frozen=True)
class Entry:
    """What a holder knows of a step: its status and recorded output. Within one lease only its holder
    writes the run's journal (every write is fenced), so entries read at the claim stay true for it."""

    status: str
    output: Any = None


def entries(session: Session, run_id: uuid.UUID) -> dict[str, Entry]:
    """The run's journal as entries by step key, in one query."""
    rows = session.execute(select(Step.step_key, Step.status, Step.output).where(Step.run_id == run_id))
    return {row.step_key: Entry(row.status, row.output) for row in rows}


def load_step(session: Session, run_id: uuid.UUID, step_key: str) -> Step | None:
    return session.scalar(select(Step).where(Step.run_id == run_id, Step.step_key == step_key))


def latest_step(session: Session, run_id: uuid.UUID) -> Step | None:
    """The step begun last (what a crashed holder was doing)."""
    return session.scalar(select(Step).where(Step.run_id == run_id).order_by(Step.started_at.desc(), Step.id.desc())
                          .limit(1))


def list_steps(session: Session, run_id: uuid.UUID) -> list[Step]:
    return list(session.scalars(select(Step).where(Step.run_id == run_id).order_by(Step.id)))


def begin_step(session: Session, lease: Lease, step_key: str, *, kind: str, input_hash: str | None = None,
               detail: dict[str, Any] | None = None) -> Step:
    """Journal `started`. A step left `started` by a crashed holder is re-begun with attempt + 1."""
    check_fence(session, lease)
    now = datetime.now(timezone.utc)
    step = session.execute(
        insert(Step)
        .values(run_id=lease.run_id, step_key=step_key, kind=kind, status=StepStatus.STARTED,
                input_hash=input_hash, attempt=1, epoch=lease.epoch, started_at=now)
        .on_conflict_do_update(
            constraint="uq_steps_run_step_key",
            set_={"attempt": Step.attempt + 1, "epoch": lease.epoch, "started_at": now, "input_hash": input_hash},
            where=(Step.status == StepStatus.STARTED))
        .returning(Step),
        # The row may already be in this session's identity map; take the returned values, not the cached ones.
        execution_options={"populate_existing": True},
    ).scalar_one_or_none()
    if step is None:
        raise ConflictError(f"step {step_key!r} of run {lease.run_id} is already recorded")
    append_event(session, lease.session_id, "step.started",
                 {"step_key": step_key, "kind": kind, "attempt": step.attempt, **(detail or {})}, run_id=lease.run_id)
    return step


def finish_step(session: Session, lease: Lease, step_key: str, *, output: Any = None,
                error: dict[str, Any] | None = None, status: StepStatus = StepStatus.FINISHED) -> Step:
    """Record the step's result, exactly once."""
    check_fence(session, lease)
    step = session.execute(
        update(Step)
        .where(Step.run_id == lease.run_id, Step.step_key == step_key, Step.status == StepStatus.STARTED)
        .values(status=status.value, output=output, error=error, finished_at=datetime.now(timezone.utc))
        .returning(Step),
        execution_options={"populate_existing": True},
    ).scalar_one_or_none()
    if step is None:
        raise ConflictError(f"step {step_key!r} of run {lease.run_id} is not in progress")
    append_event(session, lease.session_id, "step.finished",
                 {"step_key": step_key, "kind": step.kind, "status": status.value, "attempt": step.attempt,
                  "error": error}, run_id=lease.run_id)
    return step
