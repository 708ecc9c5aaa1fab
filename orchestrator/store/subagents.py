"""Background subagents: child runs of kind `subagent` that an agent starts with `spawn_subagent`.

    spawn        the child run and its prompt message, under an id derived from the spawning tool call,
                 so a repeated call (after a crash) finds the run it already made
    admit        a subagent takes one of the server's slots (and one of its user's) before its first
                 turn; with none free it goes back to `queued` and is woken when one frees
    to_admit     who gets the slots a finishing or cancelled subagent frees
    deliver      a finished subagent's result reaches its session: read by the agent (`subagent_result`),
                 or, once the session has no agent run in progress, as a follow-up agent run

Admission decisions are serialised by one transaction-scoped advisory lock, always taken after the
transaction's row locks, so deciding and freeing a slot never miss each other. Delivery decisions are
serialised by the session row, which both a finishing subagent and a finishing agent run lock
(`lock_session`, after their own run rows) before they look.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Callable

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from orchestrator.domain import slots
from orchestrator.domain.enums import MessageRole, RunStatus
from orchestrator.settings import Settings
from orchestrator.store import runs
from orchestrator.store import sessions as chat_sessions
from orchestrator.store.events import append_event, lock_session
from orchestrator.store.models import Run
from orchestrator.store.spans import run_usage

KIND = "subagent"
OPEN = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING)
ADMISSION_LOCK = 0x626F6F5375624167  # "booSubAg": one advisory lock for every admission decision
NAMESPACE = uuid.UUID("6f1c1d8e-6c55-4f0f-9a3e-2b8f5d7f0a11")
RESULT_EXCERPT = 4000


class Limits(slots.Limits):
    """The slot limits (orchestrator/domain/slots.py), read from the settings."""

    @classmethod
    def from_settings(cls, settings: Settings) -> "Limits":
        return cls(server=settings.subagent_concurrency, per_user=settings.subagent_user_concurrency)


def task_id_for(parent_run_id: uuid.UUID, step_key: str) -> uuid.UUID:
    """The subagent a tool call starts: the same call always names the same run."""
    return uuid.uuid5(NAMESPACE, f"{parent_run_id}/{step_key}")


def spawn(session: Session, parent: Run, task_id: uuid.UUID, prompt: str, spec: dict[str, Any],
          follow_up: bool) -> tuple[Run, bool]:
    """The subagent run for `task_id`, created with its prompt as first message unless it exists.
    Returns the run and whether it was created now."""
    existing = session.get(Run, task_id)
    if existing is not None:
        return existing, False
    child = runs.create_run(session, project_id=parent.project_id, session_id=parent.session_id, kind=KIND,
                            input={"prompt": prompt, "spec": spec, "follow_up": follow_up},
                            created_by=parent.created_by, parent_id=parent.id, run_id=task_id)
    chat_sessions.add_message(session, parent.session_id, MessageRole.USER, [{"type": "text", "text": prompt}],
                              run_id=child.id)
    append_event(session, parent.session_id, "subagent.spawned",
                 {"task_id": str(child.id), "label": spec.get("label"), "agent_type": spec.get("agentType"),
                  "model": spec.get("model"), "parent_run_id": str(parent.id)}, run_id=child.id)
    return child, True


def find(session: Session, session_id: uuid.UUID, task_id: str) -> Run | None:
    """A subagent of this session by id (a malformed id or another session's run is simply not found)."""
    try:
        parsed = uuid.UUID(str(task_id))
    except ValueError:
        return None
    run = session.get(Run, parsed)
    if run is None or run.kind != KIND or run.session_id != session_id:
        return None
    return run


def list_for_session(session: Session, session_id: uuid.UUID, limit: int = 200) -> list[Run]:
    return list(session.scalars(select(Run).where(Run.session_id == session_id, Run.kind == KIND)
                                .order_by(Run.created_at.desc(), Run.id).limit(limit)))


def _lock_admission(session: Session) -> None:
    session.execute(select(func.pg_advisory_xact_lock(ADMISSION_LOCK)))


def _in_use(session: Session) -> slots.InUse:
    rows = session.execute(select(Run.created_by, func.count()).where(
        Run.kind == KIND, Run.status.in_(OPEN), Run.admitted_at.is_not(None)).group_by(Run.created_by)).all()
    per_user = {user: count for user, count in rows}
    return slots.InUse(sum(per_user.values()), per_user)


def admit(session: Session, run_id: uuid.UUID, limits: Limits) -> bool:
    """Take a slot for the subagent (its lease holder calls this). True when it holds one (now or already)."""
    run = session.get(Run, run_id, with_for_update=True, populate_existing=True)
    if run is None:
        return False
    if run.admitted_at is not None:
        return True
    _lock_admission(session)
    if not slots.may_admit(limits, _in_use(session), run.created_by):
        return False
    run.admitted_at = datetime.now(timezone.utc)
    append_event(session, run.session_id, "subagent.admitted", {"task_id": str(run.id)}, run_id=run.id)
    return True


def slot_free_for(session: Session, run_id: uuid.UUID, limits: Limits) -> bool:
    """Asked as a waiting subagent hands its lease back: did a slot free up meanwhile?"""
    user = session.scalar(select(Run.created_by).where(Run.id == run_id))
    _lock_admission(session)
    return slots.may_admit(limits, _in_use(session), user)


def to_admit(session: Session, limits: Limits) -> list[Run]:
    """Waiting subagents to wake now that slots are free, oldest first, within each user's limit."""
    _lock_admission(session)
    in_use = _in_use(session)
    if in_use.total >= limits.server:
        return []
    waiting = session.scalars(select(Run).where(Run.kind == KIND, Run.status == RunStatus.QUEUED,
                                                Run.admitted_at.is_(None))
                              .order_by(Run.created_at, Run.id).limit(500))
    return slots.choose(limits, in_use, ((run, run.created_by) for run in waiting))


def announce_finished(session: Session, run: Run) -> None:
    """The session's notification that a subagent ended (the UI's toast, the CLI's `--wait`)."""
    append_event(session, run.session_id, "subagent.finished",
                 {"task_id": str(run.id), "label": (run.input.get("spec") or {}).get("label"), "status": run.status,
                  "duration_seconds": duration_seconds(run), "error": run.error,
                  "result": result_text(run)[:RESULT_EXCERPT] or None}, run_id=run.id)


def mark_delivered(session: Session, run: Run) -> None:
    if run.delivered_at is None:
        session.execute(update(Run).where(Run.id == run.id).values(delivered_at=func.now()))


def deliver_if_idle(session: Session, session_id: uuid.UUID) -> Run | None:
    """Finished subagents whose results nobody has read, handed to the session as one follow-up agent run,
    once no agent run is in progress there. Locks the session row first, so a finishing agent run and a
    finishing subagent look one after the other (each sees the other's end, or was seen by it)."""
    lock_session(session, session_id)
    busy = session.scalar(select(Run.id).where(Run.session_id == session_id, Run.kind == "agent",
                                               Run.parent_id.is_(None), Run.status.in_(OPEN)).limit(1))
    if busy is not None:
        return None  # that run's end delivers them
    pending = list(session.scalars(
        select(Run).where(Run.session_id == session_id, Run.kind == KIND, Run.delivered_at.is_(None),
                          Run.status.in_([RunStatus.COMPLETED, RunStatus.FAILED]),
                          Run.input["follow_up"].as_boolean().is_(True))
        .order_by(Run.finished_at, Run.id)))
    if not pending:
        return None
    first = pending[0]
    follow_up = runs.create_run(session, project_id=first.project_id, session_id=session_id, kind="agent",
                                input={"trigger": "subagents", "subagents": [str(run.id) for run in pending]},
                                created_by=first.created_by)
    chat_sessions.add_message(session, session_id, MessageRole.USER,
                              [{"type": "text", "text": notice(run)} for run in pending]
                              + [{"type": "subagent_notice", "task_id": str(run.id), "status": run.status}
                                 for run in pending],
                              run_id=follow_up.id)
    for run in pending:
        mark_delivered(session, run)
    return follow_up


def notice(run: Run) -> str:
    spec = run.input.get("spec") or {}
    name = f"{spec['label']!r} ({run.id})" if spec.get("label") else str(run.id)
    if run.status == RunStatus.COMPLETED:
        return (f"[background subagent {name} finished after {duration_seconds(run)}s]\n"
                f"{result_text(run)[:RESULT_EXCERPT]}")
    error = run.error or {}
    return (f"[background subagent {name} failed after {duration_seconds(run)}s: "
            f"{error.get('code', 'error')}: {error.get('message', '')}]")


def result_text(run: Run) -> str:
    return str((run.result or {}).get("text") or "") if isinstance(run.result, dict) else ""


def duration_seconds(run: Run) -> float | None:
    if run.started_at is None:
        return None
    end = run.finished_at or datetime.now(timezone.utc)
    return round((end - run.started_at).total_seconds(), 3)


def state_of(run: Run) -> str:
    """The status with the one thing `queued` hides: waiting for a free slot."""
    if run.status == RunStatus.QUEUED and run.admitted_at is None:
        return "waiting_for_slot"
    return run.status


def serialize(session: Session, run: Run) -> dict[str, Any]:
    spec = run.input.get("spec") or {}
    tokens, cost, model = run_usage(session, run.id)

    def stamp(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {"task_id": str(run.id), "label": spec.get("label"), "prompt": run.input.get("prompt"),
            "agent_type": spec.get("agentType"), "model": model or spec.get("model"), "status": run.status,
            "state": state_of(run), "parent_run_id": str(run.parent_id) if run.parent_id else None,
            "created_at": stamp(run.created_at), "started_at": stamp(run.started_at),
            "finished_at": stamp(run.finished_at), "duration_seconds": duration_seconds(run),
            "tokens": tokens, "cost": cost,
            "result": result_text(run) if run.status == RunStatus.COMPLETED else None,
            "error": run.error, "follow_up": bool(run.input.get("follow_up")),
            "delivered": run.delivered_at is not None}


def after_agent_run(session: Session, lease: runs.Lease) -> list[Run]:
    """A chat agent run ended: results that finished while it worked come next, as a follow-up run."""
    if lease.parent_id is not None:
        return []  # a workflow's agent: its session's chat is not its own
    follow_up = deliver_if_idle(session, lease.session_id)
    return [follow_up] if follow_up is not None else []


def after_subagent(session: Session, lease: runs.Lease, limits: Limits) -> list[Run]:
    """A subagent ended: tell its session, hand its result over if nobody is working there, and give its
    slot to the next subagent waiting for one."""
    run = session.get(Run, lease.run_id, populate_existing=True)
    started: list[Run] = []
    if run is not None:
        announce_finished(session, run)
        follow_up = deliver_if_idle(session, lease.session_id)
        if follow_up is not None:
            started.append(follow_up)
    return started + to_admit(session, limits)


def after_cancel(session: Session, cancelled: Run, limits: Limits) -> list[Run]:
    """A person cancelled a run (and its unfinished children): whatever that lets start."""
    started: list[Run] = []
    if cancelled.kind == "agent" and cancelled.parent_id is None:
        follow_up = deliver_if_idle(session, cancelled.session_id)
        if follow_up is not None:
            started.append(follow_up)
    return started + to_admit(session, limits)


def agent_finish_hook(settings: Settings) -> Callable[[Session, runs.Lease], list[Run]]:
    """What a chat agent run's end sets going (orchestrator/runkinds.py)."""
    return after_agent_run


def subagent_finish_hook(settings: Settings) -> Callable[[Session, runs.Lease], list[Run]]:
    """What a subagent's end sets going (orchestrator/runkinds.py)."""
    limits = Limits.from_settings(settings)
    return lambda session, lease: after_subagent(session, lease, limits)
