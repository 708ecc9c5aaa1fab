"""Flow schedules under Celery beat: the beat task applies cron.plan_beat to every schedule turned on.

    beat(db, enqueue, personal_dir, limits, now):
        for each enabled schedule, in its own transaction:
            lock its row (SKIP LOCKED: a second beat running by mistake leaves it to the first)
            read the flow's current definition; no flow, no `schedule`, or a creator who lost
                access -> `last_error`, nothing fires
            a changed cron or time zone -> the cursor moves to now (a new schedule never fires its past)
            plan = cron.plan_beat(cron, tz, overlap, catchup, cursor, now, open runs, buffered count)
            each firing: insert its row once (unique schedule+fire_at), then start / skip / buffer it,
                cancelling the open runs first under cancel_other
            plan.start_buffered -> the oldest buffered firing gets its run
            cursor, missed, next_fire_at saved with the decisions (one commit)
        enqueue the started runs after each commit (a lost enqueue is re-sent by the recovery sweep)

The state is all in Postgres (the cursor and the firing rows), so restarting the beat process loses
nothing and repeats nothing: the next beat resumes from the cursor, and a firing already written is
never acted on again. Celery beat only says "look now"; its own schedule file holds no firing state.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from orchestrator.domain.enums import Role
from orchestrator.errors import OrchestratorError
from orchestrator.flows import cron, launch
from orchestrator.flows.discovery import FlowEntry, discover
from orchestrator.jobs import task_for_kind
from orchestrator.store import flows as flow_store
from orchestrator.store import projects, subagents
from orchestrator.store import schedules as store
from orchestrator.store.database import Database
from orchestrator.store.models import FlowFiring, FlowSchedule, Project, Run, User

logger = logging.getLogger(__name__)


@dataclass
class BeatReport:
    """What one beat did, for the log and the tests."""

    schedules: int = 0
    started: list[str] = field(default_factory=list)
    skipped: int = 0
    buffered: int = 0
    missed: int = 0
    refused: list[str] = field(default_factory=list)


def beat(db: Database, enqueue: Callable[[str, str], None], personal_dir: Path | None, limits: subagents.Limits,
         now: datetime | None = None) -> BeatReport:
    report = BeatReport()
    with db.transaction() as session:
        ids = store.enabled_ids(session)
    for schedule_id in ids:
        with db.transaction() as session:
            going = _beat_one(session, schedule_id, now or datetime.now(timezone.utc), personal_dir, limits, report)
        for run_id, kind in going:
            enqueue(task_for_kind(kind), run_id)
    return report


def _problem(schedule: FlowSchedule, now: datetime, code: str, message: str) -> None:
    schedule.last_error = {"code": code, "message": message, "at": now.isoformat()}
    schedule.last_beat_at, schedule.next_fire_at = now, None


def entry_for(session: Session, schedule: FlowSchedule, personal_dir: Path | None) -> FlowEntry | str:
    """The flow as it is now, or why the schedule cannot fire."""
    project = session.get(Project, schedule.project_id)
    if project is None:
        return "the project is gone"
    found, refused = discover(Path(project.root_path), personal_dir)
    entry = found.get(schedule.flow_name)
    if entry is None:
        why = f" (its file is refused: {refused[0]})" if refused else ""
        return f"no flow named {schedule.flow_name!r} any more{why}"
    if entry.definition.schedule is None:
        return f"flow {schedule.flow_name!r} declares no `schedule` any more"
    return entry


def creator_problem(session: Session, schedule: FlowSchedule) -> str | None:
    user = session.get(User, schedule.created_by) if schedule.created_by else None
    role = projects.role_of(session, user, schedule.project_id) if user is not None else None
    if role is None or not role.allows(Role.MEMBER):
        return "the member who turned this schedule on can no longer run flows here; turn it on again"
    return None


def _beat_one(session: Session, schedule_id: uuid.UUID, now: datetime, personal_dir: Path | None,
              limits: subagents.Limits, report: BeatReport) -> list[tuple[str, str]]:
    schedule = store.lock(session, schedule_id)
    if schedule is None:
        return []  # turned off, or another beat is deciding it right now
    report.schedules += 1
    entry = entry_for(session, schedule, personal_dir)
    problem = entry if isinstance(entry, str) else creator_problem(session, schedule)
    if problem is not None or isinstance(entry, str):
        _problem(schedule, now, "schedule_cannot_fire", problem or "")
        return []
    declared = entry.definition.schedule
    assert declared is not None
    if (declared.cron, declared.timezone) != (schedule.cron, schedule.timezone):
        schedule.cron, schedule.timezone, schedule.last_fired_at = declared.cron, declared.timezone, now
    open_runs = store.open_runs(session, schedule.id)
    waiting = store.buffered(session, schedule.id)
    plan = cron.plan_beat(declared.cron, declared.timezone, declared.overlap, declared.catchup_seconds,
                          schedule.last_fired_at, now, [str(run.id) for run in open_runs], len(waiting))
    going: list[Run] = []
    for firing in plan.firings:
        going += _act(session, schedule, entry, firing, now, limits, report)
    if plan.start_buffered and waiting:
        going += _start(session, schedule, entry, waiting[0], now, report)
    schedule.last_fired_at, schedule.next_fire_at = plan.cursor, plan.next_fire_at
    schedule.missed += plan.missed
    schedule.last_beat_at, schedule.last_error = now, None
    report.missed += plan.missed
    session.flush()
    return [(str(run.id), run.kind) for run in going]


def _act(session: Session, schedule: FlowSchedule, entry: FlowEntry, firing: cron.Firing, now: datetime,
         limits: subagents.Limits, report: BeatReport) -> list[Run]:
    """Write the firing once, then do what the plan decided for it."""
    error = {"code": "overlap", "message": firing.reason} if firing.reason else None
    row = store.record_firing(session, schedule.id, firing.at, firing.outcome, error)
    if row is None:
        return []  # written already: this firing was acted on before (a restarted or second beat)
    if firing.outcome == "skipped":
        report.skipped += 1
        return []
    if firing.outcome == "buffered":
        report.buffered += 1
        return []
    going: list[Run] = []
    for run_id in firing.cancel:
        going += _cancel(session, uuid.UUID(run_id), limits)
    row.cancelled = list(firing.cancel)
    return going + _start(session, schedule, entry, row, now, report)


def _cancel(session: Session, run_id: uuid.UUID, limits: subagents.Limits) -> list[Run]:
    run = session.get(Run, run_id)
    if run is None:
        return []
    _, going = launch.cancel(session, run, limits)  # the firing row that replaces it names it in `cancelled`
    return [other for other in going if other.id != run_id]


def _start(session: Session, schedule: FlowSchedule, entry: FlowEntry, row: FlowFiring, now: datetime,
           report: BeatReport) -> list[Run]:
    """The firing's run, in a session of its own; input the flow refuses makes the firing `refused`."""
    declared = entry.definition.schedule
    trigger: dict[str, Any] = {"type": "schedule", "schedule_id": str(schedule.id),
                               "fire_at": row.fire_at.isoformat()}
    try:
        with session.begin_nested():
            chat = flow_store.flow_session(session, schedule.project_id, entry.name, schedule.created_by)
            run = launch.start(session, chat, schedule.created_by, entry, declared.input if declared else None,
                               trigger)
    except OrchestratorError as error:
        row.outcome, row.error = "refused", {"code": error.code, "message": error.message}
        report.refused.append(error.message)
        return []
    row.outcome, row.run_id, row.started_at = "started", run.id, now
    report.started.append(str(run.id))
    return [run]
