"""The workflow journal: one row per `agent()` call (settled once from its child run) and the log.

Every query the workflow engine makes lives here; the engine decides, this module reads and writes.
Every write happens in a transaction of the tick that holds the workflow run's lease and is fenced
by its epoch (`check_fence`), so a stale tick cannot dispatch or settle anything.

A tick of a wide fan-out touches many calls at once, so the hot paths work in sets: the finished
children of all running calls are read in one query and their usage in one more
(`settle_finished_children`), the calls a tick dispatches are started together (`start_calls`), and
log lines go in one statement (`add_logs`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Iterable

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, defer

from orchestrator.domain.enums import TERMINAL_STATUSES, CallStatus, MessageRole, RunStatus
from orchestrator.errors import NotFoundError
from orchestrator.store import runs
from orchestrator.store import sessions as chat_sessions
from orchestrator.store.events import append_event
from orchestrator.store.models import Project, Run, Span, WorkflowCall, WorkflowLog, table_of
from orchestrator.store.spans import run_usage

SETTLED = ("completed", "failed", "cancelled", "refused")
TERMINAL = [status.value for status in TERMINAL_STATUSES]
# rows of one multi-row INSERT: log lines (6 parameters a row) or queued calls (12), well under Postgres' 65,535
ROWS_PER_STATEMENT = 1000
Usage = tuple[int, float, "str | None"]  # tokens, cost, model: what spans.run_usage gives for one run


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


def load_calls(session: Session, run_id: uuid.UUID, *, prompts: bool = True) -> dict[str, WorkflowCall]:
    """Every call of the run by key. A tick replays from the values and never reads the prompts (the
    script makes them again), so it leaves them out (`prompts=False`): a 1,000-agent run's prompts are
    not read on every tick."""
    query = select(WorkflowCall).where(WorkflowCall.run_id == run_id).order_by(WorkflowCall.id)
    if not prompts:
        query = query.options(defer(WorkflowCall.prompt, raiseload=True))
    return {row.call_key: row for row in session.scalars(query)}


def load_open_calls(session: Session, run_id: uuid.UUID, *, queued_limit: int) -> dict[str, WorkflowCall]:
    """The running calls (without prompts) and the first `queued_limit` queued ones (with theirs, to
    start), by key: what a tick needs to settle and to fill free slots, however long the run's
    journal and its queue are."""
    running = select(WorkflowCall).where(WorkflowCall.run_id == run_id, WorkflowCall.status == "running") \
        .options(defer(WorkflowCall.prompt, raiseload=True)).order_by(WorkflowCall.id)
    queued = select(WorkflowCall).where(WorkflowCall.run_id == run_id, WorkflowCall.status == "queued") \
        .order_by(WorkflowCall.id).limit(queued_limit)
    return {row.call_key: row for query in (running, queued) for row in session.scalars(query)}


def load_calls_by_key(session: Session, run_id: uuid.UUID, keys: Iterable[str]) -> dict[str, WorkflowCall]:
    """The rows of just these calls (a tick writing what its replay decided needs only those)."""
    wanted = list(set(keys))
    if not wanted:
        return {}
    rows = session.scalars(select(WorkflowCall).where(WorkflowCall.run_id == run_id, WorkflowCall.call_key.in_(wanted)))
    return {row.call_key: row for row in rows}


def list_logs(session: Session, run_id: uuid.UUID, limit: int = 2000) -> list[WorkflowLog]:
    return list(session.scalars(select(WorkflowLog).where(WorkflowLog.run_id == run_id)
                                .order_by(WorkflowLog.id).limit(limit)))


def add_logs(session: Session, run: Run, entries: list[dict[str, Any]]) -> int:
    """Insert log lines not written by an earlier replay; each new one is announced once, in the order
    the script wrote them. Every replay hands over all its lines again, so they go in one statement
    per ROWS_PER_STATEMENT rows, the ones already there skipped by the unique key."""
    unique = list({entry["key"]: entry for entry in entries}.values())
    added_keys: set[str] = set()
    now = datetime.now(timezone.utc)
    for start in range(0, len(unique), ROWS_PER_STATEMENT):
        rows = [{"run_id": run.id, "log_key": entry["key"], "level": entry["level"], "phase": entry.get("phase"),
                 "text": entry["text"][:10_000], "created_at": now}
                for entry in unique[start:start + ROWS_PER_STATEMENT]]
        added_keys.update(session.scalars(insert(WorkflowLog).values(rows)
                                          .on_conflict_do_nothing(constraint="uq_workflow_logs_run_key")
                                          .returning(WorkflowLog.log_key)))
    for entry in unique:
        if entry["key"] in added_keys:
            append_event(session, run.session_id, "workflow.log",
                         {"level": entry["level"], "phase": entry.get("phase"), "text": entry["text"][:10_000]},
                         run_id=run.id)
    return len(added_keys)


def project_root(session: Session, project_id: uuid.UUID) -> str:
    """The directory a workflow's script and agents work in: its project's root."""
    root = session.scalar(select(Project.root_path).where(Project.id == project_id))
    if root is None:
        raise NotFoundError(f"project {project_id} does not exist")
    return root


def settle_finished_children(session: Session, run: Run, calls: dict[str, WorkflowCall]) -> list[WorkflowCall]:
    """Settle every running call whose child run has finished, whatever their number: the children in
    one query, their usage in one more. Returns the calls settled, in the order their children ended."""
    running = {call.child_run_id: call for call in calls.values() if call.status == "running" and call.child_run_id}
    if not running:
        return []
    finished = list(session.scalars(select(Run).where(Run.id.in_(list(running)), Run.status.in_(TERMINAL))
                                    .order_by(Run.finished_at, Run.id)))
    usage = usage_of_runs(session, [child.id for child in finished])
    for child in finished:
        settle_from_child(session, run, running[child.id], child, usage=usage[child.id])
    return [running[child.id] for child in finished]


def usage_of_runs(session: Session, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, Usage]:
    """`spans.run_usage` for many runs in one query: the same sums in the same order, per run."""
    usage: dict[uuid.UUID, Usage] = {run_id: (0, 0.0, None) for run_id in run_ids}
    if not run_ids:
        return usage
    totals: dict[uuid.UUID, list[Any]] = {run_id: [0, 0.0, None] for run_id in run_ids}
    rows = session.execute(select(Span.run_id, Span.attributes)
                           .where(Span.run_id.in_(run_ids), Span.kind == "model_call").order_by(Span.position))
    for run_id, attributes in rows:
        figures, counted = totals[run_id], attributes.get("usage") or {}
        figures[0] += int(counted.get("input_total", 0)) + int(counted.get("output", 0))
        figures[1] += float((attributes.get("cost") or {}).get("total", 0.0))
        figures[2] = attributes.get("model") or figures[2]
    return {run_id: (tokens, round(cost, 8), model) for run_id, (tokens, cost, model) in totals.items()}


# A wide fan-out ticks when a quarter of its running agents have finished (or all of them), not once
# per finished agent: each tick replays the whole script, so ticking per child cost more than the
# children. Narrow ones (fewer than 4 running) still tick on every finish.
TICK_FRACTION = 4


def tick_is_due(session: Session, run_id: uuid.UUID) -> bool:
    """Should a tick of this workflow run now? Asked by a finishing child (`runs.parent_to_wake`, with
    the workflow's row locked, so finishing children count one after another and the last one always
    sees everything finished) and by the tick handing its lease back (`Defer.wake`), by the same rule."""
    running, finished = session.execute(_COUNT_RUNNING, {"run": run_id}).one()
    return bool(finished) and (finished == running or TICK_FRACTION * finished >= running)


def tick_wanted(session: Session, run_id: uuid.UUID) -> bool:
    """The tick handing its lease back goes on at once when a child asked for a tick meanwhile
    (`tick_pending`: that child's call for a tick found the lease held, and later children see it set
    and ask no more) or when one is due by the rule above. Checking only the rule lost wake-ups: a child
    could find the tick due before this tick's new children were counted, and the hand-back not."""
    asked = session.scalar(_TICK_PENDING, {"run": run_id})
    return bool(asked) or tick_is_due(session, run_id)


# built once: every finishing agent of a workflow asks `tick_is_due` (see store/spans.py)
_CALLS, _RUNS = table_of(WorkflowCall), table_of(Run)
_COUNT_RUNNING = (select(func.count(), func.count().filter(_RUNS.c.status.in_(TERMINAL)))
                  .select_from(_CALLS).join(_RUNS, _RUNS.c.id == _CALLS.c.child_run_id)
                  .where(_CALLS.c.run_id == bindparam("run", type_=_CALLS.c.run_id.type), _CALLS.c.status == "running"))
_TICK_PENDING = select(_RUNS.c.tick_pending).where(_RUNS.c.id == bindparam("run", type_=_RUNS.c.id.type))


def children_of_running_calls(session: Session, calls: Iterable[WorkflowCall]) -> dict[uuid.UUID, Run]:
    """The child runs of the calls still `running`, by id, in one query."""
    ids = [call.child_run_id for call in calls if call.status == "running" and call.child_run_id is not None]
    if not ids:
        return {}
    return {child.id: child for child in session.scalars(select(Run).where(Run.id.in_(ids)))}


def start_calls(session: Session, run: Run, starts: list[tuple[dict[str, Any], WorkflowCall | None]],
                pass_number: int) -> list[uuid.UUID]:
    """Start a child agent run for each `(agent() call, its row from an earlier pass or None)`, the
    prompt as the child's first message, and mark each call `running` with its child, all in the
    caller's transaction. Returns the child run ids, in order, to enqueue after the commit."""
    now = datetime.now(timezone.utc)
    started: list[tuple[WorkflowCall, uuid.UUID]] = []
    children = [runs.create_run(session, project_id=run.project_id, session_id=run.session_id, kind="agent",
                                input={"spec": {"key": call["key"], "workflow_run_id": str(run.id),
                                                **(call.get("options") or {})}},
                                created_by=run.created_by, parent_id=run.id, flush=False) for call, _ in starts]
    session.flush()  # the runs in one statement, before the rows that refer to them
    for (call, row), child in zip(starts, children):
        options = call.get("options") or {}
        chat_sessions.add_message(session, run.session_id, MessageRole.USER,
                                  [{"type": "text", "text": call["prompt"]}], run_id=child.id)
        if row is None:
            row = WorkflowCall(run_id=run.id, call_key=call["key"], prompt=call["prompt"], options=options, attempts=1)
            session.add(row)
        else:  # a queued call, or a failed or stopped one from an earlier pass that runs again
            row.attempts += 1
        row.status, row.child_run_id, row.pass_number = CallStatus.RUNNING, child.id, pass_number
        row.label, row.phase, row.value, row.error = options.get("label"), options.get("phase"), None, None
        row.model, row.started_at, row.finished_at, row.tokens, row.cost = options.get("model"), now, None, 0, 0.0
        started.append((row, child.id))
    session.flush()
    for row, child_id in started:
        append_event(session, run.session_id, "workflow.agent.started",
                     {"key": row.call_key, "label": row.label, "phase": row.phase, "child_run_id": str(child_id),
                      "attempt": row.attempts}, run_id=run.id)
    return [child_id for _, child_id in started]


def queue_calls(session: Session, run: Run, calls: list[dict[str, Any]], pass_number: int, *,
                again: Iterable[str] = ()) -> None:
    """Record agent() calls the script made that have no free slot yet, in the order it made them: a
    later tick starts them from these rows (`start_calls`) without replaying the script for them.
    `again`: keys of failed or cancelled calls of an earlier pass that run again (a resume), queued
    in place. Announced as one event; `attempts` counts up when one starts."""
    again = list(again)
    if again:
        session.execute(update(WorkflowCall).where(WorkflowCall.run_id == run.id, WorkflowCall.call_key.in_(again),
                                                   WorkflowCall.status.in_(("failed", "cancelled")))
                        .values(status=CallStatus.QUEUED.value))
    if not calls and not again:
        return
    now = datetime.now(timezone.utc)
    rows = [{"run_id": run.id, "call_key": call["key"], "status": CallStatus.QUEUED.value, "prompt": call["prompt"],
             "options": call.get("options") or {}, "label": (call.get("options") or {}).get("label"),
             "phase": (call.get("options") or {}).get("phase"), "pass_number": pass_number, "attempts": 0,
             "tokens": 0, "cost": 0.0, "created_at": now} for call in calls]
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        session.execute(insert(WorkflowCall).values(rows[start:start + ROWS_PER_STATEMENT])
                        .on_conflict_do_nothing(constraint="uq_workflow_calls_run_key"))
    keys = again + [row["call_key"] for row in rows]
    append_event(session, run.session_id, "workflow.agents.queued", {"count": len(keys), "keys": keys[:50]},
                 run_id=run.id)


def drop_queued(session: Session, run_id: uuid.UUID, keys: Iterable[str]) -> None:
    """Forget queued calls the script no longer makes (a replay did not make them again): they never
    started, so nothing else refers to them."""
    wanted = list(set(keys))
    if wanted:
        session.execute(delete(WorkflowCall).where(WorkflowCall.run_id == run_id, WorkflowCall.status == "queued",
                                                   WorkflowCall.call_key.in_(wanted)))


def cancel_queued(session: Session, run_ids: Iterable[uuid.UUID], reason: str) -> None:
    """The run ended (or was cancelled) with calls still waiting for a slot: they will never start."""
    ids = list(run_ids)
    if ids:
        session.execute(update(WorkflowCall).where(WorkflowCall.run_id.in_(ids), WorkflowCall.status == "queued")
                        .values(status=CallStatus.CANCELLED.value, finished_at=datetime.now(timezone.utc),
                                error={"code": "cancelled", "message": reason}))


def settle_cancelled(session: Session, tree: list[Run], reason: str) -> None:
    """A cancel reached these runs: the calls of each workflow among them end too, the running ones
    as their (now cancelled) children ended and the queued ones never started, so no report of a
    cancelled workflow says `running` or `queued`."""
    by_id = {current.id: current for current in tree}
    workflow_ids = [current.id for current in tree if current.kind == "workflow"]
    cancel_queued(session, workflow_ids, reason)
    running = list(session.scalars(select(WorkflowCall).where(
        WorkflowCall.run_id.in_(workflow_ids), WorkflowCall.status == "running")
        .order_by(WorkflowCall.id)))
    for call in running:
        child = by_id.get(call.child_run_id) if call.child_run_id else None
        if child is not None and RunStatus(child.status).is_terminal:
            settle_from_child(session, by_id[call.run_id], call, child)


def settle_from_child(session: Session, run: Run, call: WorkflowCall, child: Run, *,
                      usage: Usage | None = None) -> None:
    """Record a finished child's outcome on its call, once (the caller holds the workflow's lease);
    `usage` when the caller read it already (`usage_of_runs`)."""
    tokens, cost, model = usage if usage is not None else run_usage(session, child.id)
    call.tokens, call.cost, call.model = tokens, cost, model or call.model
    call.finished_at = child.finished_at or datetime.now(timezone.utc)
    if child.status == RunStatus.COMPLETED:
        result = child.result or {}
        call.status = CallStatus.COMPLETED
        call.value = result.get("value") if (call.options or {}).get("schema") is not None else result.get("text")
        call.error = None
    else:
        call.status = CallStatus.CANCELLED if child.status == RunStatus.CANCELLED else CallStatus.FAILED
        call.value = None
        call.error = child.error or {"code": child.status, "message": f"the agent ended {child.status}"}
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
