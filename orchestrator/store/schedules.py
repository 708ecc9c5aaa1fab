"""Flow schedules and their firings in the database (what orchestrator/flows/schedules.py decides on).

A schedule row is locked (`FOR UPDATE SKIP LOCKED`) by the beat that works on it, so two beats
never decide the same schedule at once; a firing row is inserted with ON CONFLICT DO NOTHING on
(schedule_id, fire_at), so even a beat that slipped past the lock cannot start a firing twice.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from orchestrator.domain.enums import TERMINAL_STATUSES
from orchestrator.store.models import FlowFiring, FlowSchedule, Run

TERMINAL = [status.value for status in TERMINAL_STATUSES]
RECENT_FIRINGS = 20


def _stamp(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def serialize_schedule(schedule: FlowSchedule) -> dict[str, Any]:
    return {"id": str(schedule.id), "project_id": str(schedule.project_id), "flow": schedule.flow_name,
            "enabled": schedule.enabled, "cron": schedule.cron, "timezone": schedule.timezone,
            "created_by": str(schedule.created_by) if schedule.created_by else None,
            "created_at": _stamp(schedule.created_at), "last_fired_at": _stamp(schedule.last_fired_at),
            "next_fire_at": _stamp(schedule.next_fire_at), "missed": schedule.missed,
            "last_beat_at": _stamp(schedule.last_beat_at), "last_error": schedule.last_error}


def serialize_firing(firing: FlowFiring) -> dict[str, Any]:
    return {"fire_at": _stamp(firing.fire_at), "outcome": firing.outcome,
            "run_id": str(firing.run_id) if firing.run_id else None, "cancelled": firing.cancelled,
            "error": firing.error, "created_at": _stamp(firing.created_at), "started_at": _stamp(firing.started_at)}


def turn_on(session: Session, project_id: uuid.UUID, flow_name: str, user_id: uuid.UUID | None, cron: str,
            timezone_name: str) -> FlowSchedule:
    """Turn the flow's schedule on (again): it fires from now on, never its past, as `user_id`."""
    now = datetime.now(timezone.utc)
    schedule = session.scalar(select(FlowSchedule).where(FlowSchedule.project_id == project_id,
                                                         FlowSchedule.flow_name == flow_name).with_for_update())
    if schedule is None:
        schedule = FlowSchedule(project_id=project_id, flow_name=flow_name, created_at=now)
        session.add(schedule)
    if not schedule.enabled or schedule.id is None or schedule.cron != cron or schedule.timezone != timezone_name:
        schedule.last_fired_at, schedule.missed = now, 0
    schedule.enabled, schedule.created_by, schedule.cron, schedule.timezone = True, user_id, cron, timezone_name
    schedule.last_error = None
    session.flush()
    return schedule


def turn_off(session: Session, schedule: FlowSchedule) -> FlowSchedule:
    schedule.enabled, schedule.next_fire_at = False, None
    session.flush()
    return schedule


def load(session: Session, schedule_id: uuid.UUID) -> FlowSchedule | None:
    return session.get(FlowSchedule, schedule_id)


def of_project(session: Session, project_id: uuid.UUID) -> list[FlowSchedule]:
    return list(session.scalars(select(FlowSchedule).where(FlowSchedule.project_id == project_id)
                                .order_by(FlowSchedule.flow_name)))


def enabled_ids(session: Session) -> list[uuid.UUID]:
    return list(session.scalars(select(FlowSchedule.id).where(FlowSchedule.enabled.is_(True))
                                .order_by(FlowSchedule.id)))


def lock(session: Session, schedule_id: uuid.UUID) -> FlowSchedule | None:
    """The enabled schedule, locked for this beat; None if another beat holds it (it decides) or it is off."""
    return session.scalar(select(FlowSchedule).where(FlowSchedule.id == schedule_id, FlowSchedule.enabled.is_(True))
                          .with_for_update(skip_locked=True).execution_options(populate_existing=True))


def open_runs(session: Session, schedule_id: uuid.UUID) -> list[Run]:
    """The unfinished runs this schedule started, oldest first."""
    return list(session.scalars(select(Run).join(FlowFiring, FlowFiring.run_id == Run.id)
                                .where(FlowFiring.schedule_id == schedule_id, Run.status.not_in(TERMINAL))
                                .order_by(FlowFiring.fire_at)))


def buffered(session: Session, schedule_id: uuid.UUID) -> list[FlowFiring]:
    """Firings kept by a buffering policy and not started yet, oldest first."""
    return list(session.scalars(select(FlowFiring).where(FlowFiring.schedule_id == schedule_id,
                                                         FlowFiring.outcome == "buffered")
                                .order_by(FlowFiring.fire_at)))


def record_firing(session: Session, schedule_id: uuid.UUID, fire_at: datetime, outcome: str,
                  error: dict[str, Any] | None = None) -> FlowFiring | None:
    """The firing's row, written once; None when it exists already (another beat acted on it)."""
    inserted = session.scalar(insert(FlowFiring).values(
        schedule_id=schedule_id, fire_at=fire_at, outcome=outcome, cancelled=[], error=error)
        .on_conflict_do_nothing(constraint="uq_flow_firings_schedule_fire_at").returning(FlowFiring.id))
    return session.get(FlowFiring, inserted) if inserted is not None else None


def recent_firings(session: Session, schedule_id: uuid.UUID, limit: int = RECENT_FIRINGS) -> list[FlowFiring]:
    return list(session.scalars(select(FlowFiring).where(FlowFiring.schedule_id == schedule_id)
                                .order_by(FlowFiring.fire_at.desc()).limit(limit)))


def firings_of(session: Session, schedule_id: uuid.UUID) -> list[FlowFiring]:
    return list(session.scalars(select(FlowFiring).where(FlowFiring.schedule_id == schedule_id)
                                .order_by(FlowFiring.fire_at)))
