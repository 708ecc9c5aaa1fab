"""Flow runs in the database: their step rows, their child runs, what they spent, their trigger tokens.

Every query the flow runner and the flow routes make lives here; orchestrator/flows/ decides, this
module reads and writes. A step row is written only in a transaction of the tick holding the flow
run's lease (fenced by its epoch), or by cancel and rerun, which lock the run row first; every
change of state appends its `flow.step.*` event in the same transaction.

A step's child run is keyed by (run, step, attempt): its id is derived from them (`child_id_for`),
so dispatching the same attempt again after a crash adopts the child that already exists instead of
starting a second one.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable

from sqlalchemy import exists, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from orchestrator.domain.enums import TERMINAL_STATUSES, MessageRole, RunKind, RunStatus
from orchestrator.domain.enums import FlowStepState as StepState
from orchestrator.store import runs
from orchestrator.store import sessions as chat_sessions
from orchestrator.store.events import append_event
from orchestrator.store.models import ChatSession, FlowStep, FlowTrigger, Run
from orchestrator.store.workflows import Usage, usage_of_runs

NAMESPACE = uuid.UUID("3b0d6a52-5a3e-4c1e-9f0e-6d1f0c2b7a90")
TERMINAL = [status.value for status in TERMINAL_STATUSES]
TRIGGER_PREFIX = "bft_"


def child_id_for(run_id: uuid.UUID, step_id: str, attempt: int) -> uuid.UUID:
    """The child run of one attempt of one step: the same attempt always names the same run."""
    return uuid.uuid5(NAMESPACE, f"{run_id}/{step_id}/{attempt}")


def _stamp(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def serialize_step(row: FlowStep) -> dict[str, Any]:
    duration = None
    if row.started_at and row.finished_at:
        duration = round((row.finished_at - row.started_at).total_seconds() * 1000, 1)
    return {"id": row.step_id, "state": row.state, "attempt": row.attempt, "first_attempt": row.first_attempt,
            "child_run_id": str(row.child_run_id) if row.child_run_id else None,
            "started_at": _stamp(row.started_at), "finished_at": _stamp(row.finished_at),
            "timed_out_at": _stamp(row.timed_out_at), "duration_ms": duration, "result": row.result,
            "error": row.error, "reason": row.reason, "tokens": row.tokens, "cost": row.cost, "model": row.model,
            "history": row.history or []}


# --- step rows ------------------------------------------------------------------------------------


def create_steps(session: Session, run_id: uuid.UUID, step_ids: Iterable[str]) -> None:
    """A pending row per step, once (a second call changes nothing)."""
    rows = [{"run_id": run_id, "step_id": step_id, "state": StepState.PENDING, "attempt": 0,
             "first_attempt": 1, "history": []} for step_id in step_ids]
    if rows:
        session.execute(insert(FlowStep).values(rows).on_conflict_do_nothing(constraint="uq_flow_steps_run_step"))


def load_steps(session: Session, run_id: uuid.UUID) -> dict[str, FlowStep]:
    rows = session.scalars(select(FlowStep).where(FlowStep.run_id == run_id).order_by(FlowStep.id))
    return {row.step_id: row for row in rows}


def children_of(session: Session, rows: Iterable[FlowStep]) -> dict[uuid.UUID, Run]:
    """The child runs the rows name, by id, in one query."""
    ids = [row.child_run_id for row in rows if row.child_run_id is not None]
    if not ids:
        return {}
    return {child.id: child for child in session.scalars(select(Run).where(Run.id.in_(ids)))}


def usage_of(session: Session, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, Usage]:
    return usage_of_runs(session, run_ids)


def child_finished_unsettled(session: Session, run_id: uuid.UUID) -> bool:
    """Has the child of a running step finished (a tick would settle it)?"""
    return bool(session.scalar(select(exists().where(
        FlowStep.run_id == run_id, FlowStep.state == StepState.RUNNING,
        Run.id == FlowStep.child_run_id, Run.status.in_(TERMINAL)))))


def _event(session: Session, run: Run, event_type: str, row: FlowStep, **extra: Any) -> None:
    append_event(session, run.session_id, event_type,
                 {"step": row.step_id, "state": row.state, "attempt": row.attempt,
                  "child_run_id": str(row.child_run_id) if row.child_run_id else None, **extra}, run_id=run.id)


def _close_attempt(row: FlowStep) -> None:
    """Remember how the attempt that just ended went (the row then moves on to the next one)."""
    if row.attempt < 1:
        return
    entry = {"attempt": row.attempt, "state": row.state, "child_run_id": str(row.child_run_id) if row.child_run_id
             else None, "started_at": _stamp(row.started_at), "finished_at": _stamp(row.finished_at),
             "error": row.error, "tokens": row.tokens, "cost": row.cost}
    row.history = [item for item in (row.history or []) if item.get("attempt") != row.attempt] + [entry]


def start_attempt(session: Session, run: Run, row: FlowStep, attempt: int, child_run_id: uuid.UUID | None,
                  now: datetime) -> None:
    row.state, row.attempt, row.child_run_id = StepState.RUNNING, attempt, child_run_id
    row.started_at, row.finished_at, row.timed_out_at, row.updated_at = now, None, None, now
    row.result, row.error, row.reason, row.tokens, row.cost = None, None, None, 0, 0.0
    _event(session, run, "flow.step.started", row)


def end_step(session: Session, run: Run, row: FlowStep, state: StepState, *, attempt: int | None = None,
             result: Any = None, error: dict[str, Any] | None = None, reason: str | None = None,
             finished_at: datetime | None = None, usage: Usage | None = None, timed_out: bool = False) -> None:
    """Settle the step (a result, a failure, a skip, an exclusion …) and say so on the event log."""
    now = datetime.now(timezone.utc)
    row.state = state
    row.attempt = row.attempt if attempt is None else attempt
    row.result, row.error, row.reason = result, error, reason
    row.finished_at = finished_at or now
    row.started_at = row.started_at or row.finished_at
    row.updated_at = now
    if timed_out:
        row.timed_out_at = now
    if usage is not None:
        row.tokens, row.cost, row.model = usage[0], usage[1], usage[2] or row.model
    _close_attempt(row)
    _event(session, run, "flow.step.finished", row, error=error, reason=reason, tokens=row.tokens, cost=row.cost)


def reset_step(session: Session, run: Run, row: FlowStep, record: Any) -> None:
    """Back to pending for a rerun: the attempt number stays (it fences), the budget starts again.
    `record` is the scheduler's StepRecord (orchestrator/flows/records.py) for the step."""
    row.state, row.attempt, row.first_attempt = record.state.value, record.attempt, record.first_attempt
    row.started_at = row.finished_at = row.timed_out_at = None
    row.result, row.error, row.reason, row.child_run_id = None, None, None, None
    row.tokens, row.cost, row.updated_at = 0, 0.0, datetime.now(timezone.utc)
    _event(session, run, "flow.step.reset", row)


def start_child(session: Session, run: Run, step_id: str, attempt: int, kind: str, input: dict[str, Any],
                prompt: str | None) -> Run:
    """The child run of (run, step, attempt); one that exists already (dispatched before a crash) is
    adopted, never started twice. An agent's prompt is its first message."""
    child_id = child_id_for(run.id, step_id, attempt)
    existing = session.get(Run, child_id)
    if existing is not None:
        return existing
    child = runs.create_run(session, project_id=run.project_id, session_id=run.session_id, kind=kind, input=input,
                            created_by=run.created_by, parent_id=run.id, run_id=child_id)
    if prompt is not None:
        chat_sessions.add_message(session, run.session_id, MessageRole.USER, [{"type": "text", "text": prompt}],
                                  run_id=child.id)
    return child


def _attempt_children(rows: Iterable[FlowStep], current_only: bool) -> list[uuid.UUID]:
    """The child runs the rows' attempts started (from their history and the attempt now running);
    `current_only`: only the attempts of each step's current generation (a rerun starts a new one)."""
    found: dict[uuid.UUID, None] = {}
    for row in rows:
        floor = row.first_attempt if current_only else 1
        named = [item.get("child_run_id") for item in row.history or [] if int(item.get("attempt") or 0) >= floor]
        if row.child_run_id is not None and row.attempt >= floor:
            named.append(str(row.child_run_id))
        found.update((uuid.UUID(str(child_id)), None) for child_id in named if child_id)
    return list(found)


def spending(session: Session, rows: Iterable[FlowStep], *, current_only: bool = True) -> dict[str, Any]:
    """What the agents a flow run's steps started have cost, with those of its nested flows (one level):
    `agents` (every attempt counts), `tokens` and `cost` from their model-call spans, so an agent still
    running counts what it has spent so far. `current_only` leaves out attempts a rerun reset."""
    agents: list[uuid.UUID] = []
    level = list(rows)
    for _ in range(2):  # the run's own steps, then those of the nested flow runs they started
        started = _attempt_children(level, current_only)
        if not started:
            break
        kinds: dict[uuid.UUID, str] = {run_id: kind for run_id, kind in session.execute(
            select(Run.id, Run.kind).where(Run.id.in_(started)))}
        agents += [run_id for run_id in started if kinds.get(run_id) == RunKind.AGENT.value]
        nested = [run_id for run_id in started if kinds.get(run_id) == RunKind.FLOW.value]
        level = list(session.scalars(select(FlowStep).where(FlowStep.run_id.in_(nested)))) if nested else []
    usage = usage_of_runs(session, agents)
    return {"agents": len(agents), "tokens": sum(figures[0] for figures in usage.values()),
            "cost": round(sum(figures[1] for figures in usage.values()), 8)}


def finished_runs_of(session: Session, project_id: uuid.UUID, flow_name: str, limit: int = 10) -> list[Run]:
    """The latest runs of a flow in a project that completed (with or without failures), newest first."""
    return list(session.scalars(select(Run).where(
        Run.project_id == project_id, Run.kind == RunKind.FLOW.value, Run.input["flow"]["name"].astext == flow_name,
        Run.status.in_([RunStatus.COMPLETED, RunStatus.COMPLETED_WITH_FAILURES]))
        .order_by(Run.created_at.desc()).limit(limit)))


def totals(rows: Iterable[FlowStep]) -> dict[str, Any]:
    """Tokens and cost of every attempt of every step (the ended ones from the history)."""
    tokens, cost = 0, 0.0
    for row in rows:
        ended = [item for item in (row.history or []) if item.get("attempt") != row.attempt]
        tokens += row.tokens + sum(int(item.get("tokens") or 0) for item in ended)
        cost += row.cost + sum(float(item.get("cost") or 0.0) for item in ended)
    return {"tokens": tokens, "cost": round(cost, 8)}


# --- runs -----------------------------------------------------------------------------------------


def create_flow_run(session: Session, chat: ChatSession, user_id: uuid.UUID | None, flow: dict[str, Any],
                    step_ids: list[str], flow_input: Any, trigger: dict[str, Any]) -> Run:
    """A queued flow run keeping the definition it started with (`flow`: name, source, path, text and
    parsed data), its input, what started it, and a pending row per step."""
    run = runs.create_run(session, project_id=chat.project_id, session_id=chat.id, kind=RunKind.FLOW.value,
                          input={"flow": flow, "input": flow_input, "trigger": trigger}, created_by=user_id)
    create_steps(session, run.id, step_ids)
    append_event(session, chat.id, "flow.started", {"name": flow["name"], "source": flow.get("source"),
                                                    "trigger": trigger}, run_id=run.id)
    return run


def flow_session(session: Session, project_id: uuid.UUID, name: str, user_id: uuid.UUID | None) -> ChatSession:
    """Each flow run gets a session of its own: its events and its agents' transcripts live there."""
    return chat_sessions.create_session(session, project_id, f"flow {name}", user_id)


# --- trigger tokens -------------------------------------------------------------------------------


def hash_trigger_token(plain: str) -> str:
    return hashlib.sha256(plain.encode("utf-8", "surrogatepass")).hexdigest()


def create_trigger(session: Session, project_id: uuid.UUID, flow_name: str, user_id: uuid.UUID | None
                   ) -> tuple[FlowTrigger, str]:
    """A new trigger token for one flow; the plain token is returned once and never stored."""
    plain = TRIGGER_PREFIX + secrets.token_urlsafe(32)
    trigger = FlowTrigger(project_id=project_id, flow_name=flow_name, token_hash=hash_trigger_token(plain),
                          created_by=user_id, created_at=datetime.now(timezone.utc))
    session.add(trigger)
    session.flush()
    return trigger, plain


def list_triggers(session: Session, project_id: uuid.UUID) -> list[FlowTrigger]:
    """The project's trigger tokens that still work, oldest first."""
    return list(session.scalars(select(FlowTrigger).where(FlowTrigger.project_id == project_id,
                                                          FlowTrigger.revoked_at.is_(None))
                                .order_by(FlowTrigger.created_at, FlowTrigger.id)))


def revoke_trigger(session: Session, trigger: FlowTrigger) -> None:
    """From now on the token starts nothing (`load_trigger` no longer finds it); the row stays."""
    trigger.revoked_at = datetime.now(timezone.utc)
    session.flush()


def load_trigger(session: Session, trigger_id: uuid.UUID) -> FlowTrigger | None:
    trigger = session.get(FlowTrigger, trigger_id)
    return trigger if trigger is not None and trigger.revoked_at is None else None


def token_matches(trigger: FlowTrigger, plain: str) -> bool:
    return secrets.compare_digest(trigger.token_hash, hash_trigger_token(plain))


def serialize_trigger(trigger: FlowTrigger) -> dict[str, Any]:
    """Never the token nor its hash."""
    return {"id": str(trigger.id), "project_id": str(trigger.project_id), "flow": trigger.flow_name,
            "created_by": str(trigger.created_by) if trigger.created_by else None,
            "created_at": _stamp(trigger.created_at), "revoked_at": _stamp(trigger.revoked_at)}
