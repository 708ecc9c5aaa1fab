"""Flow schedules: turn a flow's declared `schedule` on or off in a project, and see what it fired.

The cron, time zone, overlap policy and input come from the flow's definition (its `schedule`
block); turning it on records who runs it (the caller: a member of the project) and starts its
cursor now, so it never fires its past. The beat process fires it (docs/flows.md, Schedules).
Viewers read; members turn on and off.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from flask import Blueprint

from orchestrator.domain.enums import Role
from orchestrator.errors import NotFoundError, ValidationError
from orchestrator.flows.discovery import discover
from orchestrator.store import schedules as store
from orchestrator.store.models import FlowSchedule
from web.api import operation
from web.auth import current_user, require_project
from web.state import state

bp = Blueprint("flow_schedules", __name__, url_prefix="/api")

SET_SCHEDULE = {"type": "object", "properties": {"enabled": {"type": "boolean"}}, "required": ["enabled"],
                "additionalProperties": False}


def _shown(session, schedule: FlowSchedule, firings: int) -> dict:
    return {**store.serialize_schedule(schedule),
            "firings": [store.serialize_firing(firing) for firing in store.recent_firings(session, schedule.id,
                                                                                          firings)]}


def _schedule_of(session, project_id: uuid.UUID, name: str) -> FlowSchedule | None:
    return next((schedule for schedule in store.of_project(session, project_id) if schedule.flow_name == name), None)


@operation(bp, "GET", "/projects/<uuid:project_id>/flow-schedules",
           summary="The project's flow schedules: on or off, cron, next and last firing, missed, last error")
def list_schedules(project_id: uuid.UUID):
    with state().db.transaction() as session:
        require_project(session, project_id, Role.VIEWER)
        return {"schedules": [_shown(session, schedule, 5) for schedule in store.of_project(session, project_id)]}


@operation(bp, "GET", "/projects/<uuid:project_id>/flows/<name>/schedule",
           summary="One flow's schedule in the project and its last 20 firings (started, skipped, buffered, refused)")
def show_schedule(project_id: uuid.UUID, name: str):
    with state().db.transaction() as session:
        require_project(session, project_id, Role.VIEWER)
        schedule = _schedule_of(session, project_id, name)
        if schedule is None:
            raise NotFoundError(f"flow {name!r} has never been scheduled in this project "
                                f"(turn it on: PUT /api/projects/{project_id}/flows/{name}/schedule)")
        return {"schedule": _shown(session, schedule, store.RECENT_FIRINGS)}


@operation(bp, "PUT", "/projects/<uuid:project_id>/flows/<name>/schedule", body=SET_SCHEDULE,
           summary="Turn the flow's declared schedule on (it runs as you, from now on) or off")
def set_schedule(project_id: uuid.UUID, name: str, body):
    with state().db.transaction() as session:
        project, _ = require_project(session, project_id, Role.MEMBER)
        root = project.root_path
    if not body["enabled"]:
        with state().db.transaction() as session:
            schedule = _schedule_of(session, project_id, name)
            if schedule is None:
                raise NotFoundError(f"flow {name!r} has no schedule in this project")
            return {"schedule": _shown(session, store.turn_off(session, schedule), 5)}
    found, refused = discover(Path(root), state().settings.data_dir / "flows")
    entry = found.get(name)
    if entry is None:
        raise NotFoundError(f"no flow named {name!r}", details={"known": sorted(found), "refused": refused})
    declared = entry.definition.schedule
    if declared is None:
        raise ValidationError(f"flow {name!r} declares no schedule; add `schedule: {{cron: ...}}` to its file",
                              details={"path": entry.path})
    with state().db.transaction() as session:
        schedule = store.turn_on(session, project_id, name, current_user().id, declared.cron, declared.timezone)
        return {"schedule": _shown(session, schedule, 5)}
