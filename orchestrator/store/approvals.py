"""Approvals: a dangerous tool call waits here until a person approves or denies it.

Deciding locks the run row first (the same order as parking a run), so a decision that lands
between "approval requested" and "run parked as waiting" is never lost: whichever commits second
sees the other's write and re-queues the run.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from orchestrator.domain.enums import ApprovalStatus, RunStatus
from orchestrator.errors import ConflictError, NotFoundError
from orchestrator.store.events import append_event
from orchestrator.store.models import Approval, Run


def serialize_approval(approval: Approval) -> dict[str, Any]:
    return {"id": str(approval.id), "run_id": str(approval.run_id), "session_id": str(approval.session_id),
            "step_key": approval.step_key, "tool": approval.tool, "arguments": approval.arguments,
            "rule": approval.rule, "status": approval.status, "reason": approval.reason,
            "requested_at": approval.requested_at.isoformat(),
            "decided_at": approval.decided_at.isoformat() if approval.decided_at else None,
            "decided_by": str(approval.decided_by) if approval.decided_by else None}


def load_for_step(session: Session, run_id: uuid.UUID, step_key: str) -> Approval | None:
    return session.scalar(select(Approval).where(Approval.run_id == run_id, Approval.step_key == step_key))


def request_approval(session: Session, run: Run, step_key: str, tool: str, arguments: dict[str, Any],
                     rule: dict[str, Any] | None) -> Approval:
    approval = session.execute(
        insert(Approval).values(id=uuid.uuid4(), run_id=run.id, session_id=run.session_id, step_key=step_key,
                                tool=tool, arguments=arguments, rule=rule, status="pending",
                                requested_at=datetime.now(timezone.utc))
        .on_conflict_do_nothing(constraint="uq_approvals_run_step_key").returning(Approval)
    ).scalar_one_or_none()
    if approval is None:  # asked before (a re-run of the step): the existing request stands
        existing = load_for_step(session, run.id, step_key)
        if existing is None:
            raise RuntimeError(f"approval for step {step_key!r} of run {run.id} conflicted but cannot be found")
        return existing
    append_event(session, run.session_id, "approval.requested", serialize_approval(approval), run_id=run.id)
    return approval


def pending_count(session: Session, run_id: uuid.UUID) -> int:
    return session.execute(select(func.count()).select_from(Approval)
                           .where(Approval.run_id == run_id, Approval.status == "pending")).scalar_one()


def load_approval(session: Session, approval_id: uuid.UUID) -> Approval:
    approval = session.get(Approval, approval_id)
    if approval is None:
        raise NotFoundError(f"approval {approval_id} does not exist")
    return approval


def decide_approval(session: Session, approval_id: uuid.UUID, approve: bool, user_id: uuid.UUID,
                    reason: str | None) -> tuple[Approval, Run | None]:
    """Record the decision; returns the run to enqueue when it was waiting for this (and nothing else)."""
    approval = load_approval(session, approval_id)
    run = session.get(Run, approval.run_id, with_for_update=True, populate_existing=True)
    locked = session.get(Approval, approval_id, with_for_update=True, populate_existing=True)
    if locked is None or run is None:  # deleted since it was loaded (its run, session or project went)
        raise NotFoundError(f"approval {approval_id} does not exist")
    approval = locked
    if approval.status != "pending":
        raise ConflictError(f"approval {approval_id} was already {approval.status}",
                            details={"status": approval.status})
    if RunStatus(run.status).is_terminal:
        raise ConflictError(f"run {run.id} already finished with status {run.status}", details={"status": run.status})
    approval.status = ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED
    approval.reason = reason
    approval.decided_at = datetime.now(timezone.utc)
    approval.decided_by = user_id
    session.flush()
    append_event(session, run.session_id, "approval.decided", serialize_approval(approval), run_id=run.id)
    if run.status == RunStatus.WAITING and pending_count(session, run.id) == 0:
        run.status = RunStatus.QUEUED
        run.enqueued_at = datetime.now(timezone.utc)
        run.dispatches = 0
        session.flush()
        append_event(session, run.session_id, "run.queued", {"kind": run.kind, "reason": "approval decided"},
                     run_id=run.id)
        return approval, run
    return approval, None


def list_approvals(session: Session, *, session_id: uuid.UUID | None = None, run_id: uuid.UUID | None = None,
                   status: str | None = None, limit: int = 100) -> list[Approval]:
    query = select(Approval)
    if session_id is not None:
        query = query.where(Approval.session_id == session_id)
    if run_id is not None:
        query = query.where(Approval.run_id == run_id)
    if status is not None:
        query = query.where(Approval.status == status)
    return list(session.scalars(query.order_by(Approval.requested_at).limit(limit)))
