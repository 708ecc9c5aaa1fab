"""The workflow journal: one row per `agent()` call (settled once from its child run) and the log.

Every write here happens in a transaction of the tick that holds the workflow run's lease and is
fenced by its epoch (`check_fence`), so a stale tick cannot dispatch or settle anything.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from orchestrator.domain.enums import RunStatus
from orchestrator.store.events import append_event
from orchestrator.store.models import Run, WorkflowCall, WorkflowLog
from orchestrator.store.spans import run_usage

SETTLED = ("completed", "failed", "cancelled", "refused")


def serialize_call(call: WorkflowCall, current_pass: int) -> dict[str, Any]:
    duration = None
    if call.started_at and call.finished_at:
        duration = round((call.finished_at - call.started_at).total_seconds() * 1000, 1)
    return {"key": call.call_key, "label": call.label, "phase": call.phase, "status": call.status,
            "prompt": call.prompt[:2000], "options": call.options, "model": call.model, "tokens": call.tokens,
            "cost": call.cost, "duration_ms": duration, "attempts": call.attempts, "pass": call.pass_number,
            "cached": call.status == "completed" and call.pass_number < current_pass
            and call.served_pass == current_pass,
            "child_run_id": str(call.child_run_id) if call.child_run_id else None,
            "value": call.value, "error": call.error,
            "started_at": call.started_at.isoformat() if call.started_at else None,
            "finished_at": call.finished_at.isoformat() if call.finished_at else None}


def serialize_log(entry: WorkflowLog) -> dict[str, Any]:
    return {"level": entry.level, "phase": entry.phase, "text": entry.text, "created_at": entry.created_at.isoformat()}


def load_calls(session: Session, run_id: uuid.UUID) -> dict[str, WorkflowCall]:
    rows = session.scalars(select(WorkflowCall).where(WorkflowCall.run_id == run_id).order_by(WorkflowCall.id))
    return {row.call_key: row for row in rows}


def list_logs(session: Session, run_id: uuid.UUID, limit: int = 2000) -> list[WorkflowLog]:
    return list(session.scalars(select(WorkflowLog).where(WorkflowLog.run_id == run_id)
                                .order_by(WorkflowLog.id).limit(limit)))


def add_logs(session: Session, run: Run, entries: list[dict[str, Any]]) -> int:
    """Insert log lines not written by an earlier replay; each new one is announced once."""
    added = 0
    for entry in entries:
        row = session.execute(
            insert(WorkflowLog).values(run_id=run.id, log_key=entry["key"], level=entry["level"],
                                       phase=entry.get("phase"), text=entry["text"][:10_000],
                                       created_at=datetime.now(timezone.utc))
            .on_conflict_do_nothing(constraint="uq_workflow_logs_run_key").returning(WorkflowLog.id)
        ).scalar_one_or_none()
        if row is not None:
            added += 1
            append_event(session, run.session_id, "workflow.log",
                         {"level": entry["level"], "phase": entry.get("phase"), "text": entry["text"][:10_000]},
                         run_id=run.id)
    return added


def settle_from_child(session: Session, run: Run, call: WorkflowCall, child: Run) -> None:
    """Record a finished child's outcome on its call, once (the caller holds the workflow's lease)."""
    tokens, cost, model = run_usage(session, child.id)
    call.tokens, call.cost, call.model = tokens, cost, model or call.model
    call.finished_at = child.finished_at or datetime.now(timezone.utc)
    if child.status == RunStatus.COMPLETED.value:
        result = child.result or {}
        call.status = "completed"
        call.value = result.get("value") if (call.options or {}).get("schema") is not None else result.get("text")
        call.error = None
    else:
        call.status = "cancelled" if child.status == RunStatus.CANCELLED.value else "failed"
        call.value = None
        call.error = child.error or {"code": child.status, "message": f"the agent ended {child.status}"}
    session.flush()
    append_event(session, run.session_id, "workflow.agent.finished",
                 {"key": call.call_key, "label": call.label, "phase": call.phase, "status": call.status,
                  "child_run_id": str(child.id), "tokens": tokens, "cost": cost, "model": call.model,
                  "error": call.error}, run_id=run.id)


def refuse(session: Session, run: Run, call: dict[str, Any], pass_number: int, error: dict[str, Any]) -> WorkflowCall:
    row = WorkflowCall(run_id=run.id, call_key=call["key"], status="refused", prompt=call.get("prompt", ""),
                       label=(call.get("options") or {}).get("label"), phase=(call.get("options") or {}).get("phase"),
                       options=call.get("options") or {}, error=error, pass_number=pass_number, attempts=0,
                       created_at=datetime.now(timezone.utc), finished_at=datetime.now(timezone.utc))
    session.add(row)
    session.flush()
    append_event(session, run.session_id, "workflow.agent.refused",
                 {"key": call["key"], "label": row.label, "phase": row.phase, "error": error}, run_id=run.id)
    return row


def mark_served(session: Session, run: Run, call: WorkflowCall, pass_number: int) -> None:
    """A call from an earlier pass served from the journal: say so once per pass."""
    if call.served_pass == pass_number:
        return
    call.served_pass = pass_number
    append_event(session, run.session_id, "workflow.agent.cached",
                 {"key": call.call_key, "label": call.label, "phase": call.phase, "tokens": call.tokens,
                  "cost": call.cost}, run_id=run.id)


def clear_refusals(session: Session, run_id: uuid.UUID) -> None:
    """Refusals are decisions about caps and definitions at the time; a resume decides again."""
    session.execute(delete(WorkflowCall).where(WorkflowCall.run_id == run_id, WorkflowCall.status == "refused"))


def totals(session: Session, run_id: uuid.UUID) -> dict[str, Any]:
    row = session.execute(select(func.count(), func.coalesce(func.sum(WorkflowCall.tokens), 0),
                                 func.coalesce(func.sum(WorkflowCall.cost), 0.0))
                          .where(WorkflowCall.run_id == run_id, WorkflowCall.status != "refused")).one()
    return {"agents": int(row[0]), "tokens": int(row[1]), "cost": round(float(row[2]), 8)}
