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

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from orchestrator.domain.enums import StepStatus
from orchestrator.errors import ConflictError
from orchestrator.store.events import append_event
from orchestrator.store.models import Step, expire_loaded, table_of
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
    rows = session.execute(_ENTRIES, {"run": run_id})
    return {row.step_key: Entry(row.status, row.output) for row in rows}


def load_step(session: Session, run_id: uuid.UUID, step_key: str) -> Step | None:
    return session.scalar(select(Step).where(Step.run_id == run_id, Step.step_key == step_key))


def latest_step(session: Session, run_id: uuid.UUID) -> Step | None:
    """The step begun last (what a crashed holder was doing)."""
    return session.scalar(select(Step).where(Step.run_id == run_id).order_by(Step.started_at.desc(), Step.id.desc())
                          .limit(1))


def list_steps(session: Session, run_id: uuid.UUID) -> list[Step]:
    return list(session.scalars(select(Step).where(Step.run_id == run_id).order_by(Step.id)))


# Two statements per step, built once with bound parameters on the table (see store/spans.py).
_STEPS = table_of(Step)
_ENTRIES = (select(_STEPS.c.step_key, _STEPS.c.status, _STEPS.c.output)
            .where(_STEPS.c.run_id == bindparam("run", type_=_STEPS.c.run_id.type)))
_BEGUN_COLUMNS = ("run_id", "step_key", "kind", "status", "input_hash", "attempt", "epoch", "started_at")
_BEGIN = (insert(_STEPS)
          .values({name: bindparam(name, type_=_STEPS.c[name].type) for name in _BEGUN_COLUMNS})
          .on_conflict_do_update(constraint="uq_steps_run_step_key",
                                 set_={"attempt": _STEPS.c.attempt + 1, "epoch": bindparam("epoch"),
                                       "started_at": bindparam("started_at"), "input_hash": bindparam("input_hash")},
                                 where=(_STEPS.c.status == StepStatus.STARTED.value))
          .returning(_STEPS.c.id, _STEPS.c.kind, _STEPS.c.attempt))
_FINISH = (update(_STEPS)
           .where(_STEPS.c.run_id == bindparam("run"), _STEPS.c.step_key == bindparam("key"),
                  _STEPS.c.status == StepStatus.STARTED.value)
           .values(status=bindparam("new_status", type_=_STEPS.c.status.type),
                   output=bindparam("new_output", type_=_STEPS.c.output.type),
                   error=bindparam("new_error", type_=_STEPS.c.error.type),
                   finished_at=bindparam("finished", type_=_STEPS.c.finished_at.type))
           .returning(_STEPS.c.id, _STEPS.c.kind, _STEPS.c.attempt))


def begin_step(session: Session, lease: Lease, step_key: str, *, kind: str, input_hash: str | None = None,
               detail: dict[str, Any] | None = None) -> Any:
    """Journal `started`. A step left `started` by a crashed holder is re-begun with attempt + 1.
    Returns the row's id, kind and attempt."""
    check_fence(session, lease)
    step = session.execute(_BEGIN, dict(run_id=lease.run_id, step_key=step_key, kind=kind,
                                        status=StepStatus.STARTED.value, input_hash=input_hash, attempt=1,
                                        epoch=lease.epoch, started_at=datetime.now(timezone.utc))).one_or_none()
    if step is None:
        raise ConflictError(f"step {step_key!r} of run {lease.run_id} is already recorded")
    expire_loaded(session, Step, step.id)
    append_event(session, lease.session_id, "step.started",
                 {"step_key": step_key, "kind": kind, "attempt": step.attempt, **(detail or {})}, run_id=lease.run_id)
    return step


def finish_step(session: Session, lease: Lease, step_key: str, *, output: Any = None,
                error: dict[str, Any] | None = None, status: StepStatus = StepStatus.FINISHED) -> Any:
    """Record the step's result, exactly once. Returns the row's id, kind and attempt."""
    check_fence(session, lease)
    step = session.execute(_FINISH, dict(run=lease.run_id, key=step_key, new_status=status.value, new_output=output,
                                         new_error=error, finished=datetime.now(timezone.utc))).one_or_none()
    if step is None:
        raise ConflictError(f"step {step_key!r} of run {lease.run_id} is not in progress")
    expire_loaded(session, Step, step.id)
    append_event(session, lease.session_id, "step.finished",
                 {"step_key": step_key, "kind": step.kind, "status": status.value, "attempt": step.attempt,
                  "error": error}, run_id=lease.run_id)
    return step
