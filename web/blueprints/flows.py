"""Flows: list what a project can run, validate a definition, estimate, start, follow, cancel and rerun
flow runs, and trigger tokens for programs (CI, git hooks).

Access as for workflows: a viewer of the project reads, a member runs (and estimates, like a
workflow's dry run), an owner creates, lists and revokes trigger tokens. `POST
/api/flows/{id}/trigger` is the one public route: it authenticates with the trigger's own token
(`Authorization: Bearer <token>`), which starts that one flow and nothing else; a revoked one is 404.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from flask import Blueprint

from orchestrator.domain.enums import Role
from orchestrator.errors import NotFoundError
from orchestrator.flows import launch
from orchestrator.flows.discovery import FlowEntry, discover, parse
from orchestrator.store import flows as store
from orchestrator.store import runs, subagents
from orchestrator.store import sessions as chat_sessions
from orchestrator.store.models import Project
from web import schemas
from web.api import operation
from web.auth import current_user, load_visible_run, load_visible_session, presented_token, require_project
from web.errors import HttpError
from web.state import state

bp = Blueprint("flows", __name__, url_prefix="/api")


def _personal_dir() -> Path:
    return state().settings.data_dir / "flows"


def _find(root: str, name: str) -> FlowEntry:
    """The flow a start, an estimate or a trigger names, found the way the project's list shows it."""
    found, refused = discover(Path(root), _personal_dir())
    if name not in found:
        raise NotFoundError(f"no flow named {name!r}", details={"known": sorted(found), "refused": refused})
    return found[name]


@operation(bp, "GET", "/projects/<uuid:project_id>/flows",
           summary="Flows this project can run (project, personal, built-in), and files refused with every problem")
def list_flows(project_id: uuid.UUID):
    with state().db.transaction() as session:
        project, _ = require_project(session, project_id, Role.VIEWER)
        root = project.root_path
    found, refused = discover(Path(root), _personal_dir())
    return {"flows": [entry.describe() for entry in sorted(found.values(), key=lambda entry: entry.name)],
            "problems": refused}


@operation(bp, "POST", "/flows/validate", body=schemas.VALIDATE_FLOW,
           summary="Validate a flow definition (YAML or JSON): every problem at once, with its step id and line")
def validate_flow(body):
    definition, _, problems = parse(body["text"])
    return {"valid": definition is not None, "name": definition.name if definition else None, "problems": problems}


def _start(project_id: uuid.UUID, name: str, flow_input: Any, session_id: str | None, trigger: dict[str, Any],
           user_id: uuid.UUID | None) -> dict[str, Any]:
    """Find the flow, check the input, create the run (in its own session unless one is given), enqueue."""
    with state().db.transaction() as session:
        project = session.get(Project, project_id)
        root = project.root_path if project is not None else None
    if root is None:
        raise NotFoundError(f"project {project_id} does not exist")
    entry = _find(root, name)
    with state().db.transaction() as session:
        if session_id is not None:
            chat = load_visible_session(session, uuid.UUID(session_id), Role.MEMBER)
            if chat.project_id != project_id:
                raise NotFoundError(f"session {session_id} is not in project {project_id}")
        else:
            chat = store.flow_session(session, project_id, name, user_id)
        run = launch.start(session, chat, user_id, entry, flow_input, trigger)
        out = {"run": runs.serialize_run(run), "session": chat_sessions.serialize_session(chat)}
    state().queue.enqueue_run(run.kind, run.id)
    return out


@operation(bp, "POST", "/projects/<uuid:project_id>/flows/<name>/runs", body=schemas.START_FLOW, body_optional=True,
           status=202, summary="Start a flow run with input (checked against the flow's input schema)")
def start_flow(project_id: uuid.UUID, name: str, body):
    with state().db.transaction() as session:
        require_project(session, project_id, Role.MEMBER)
    return _start(project_id, name, body.get("input"), body.get("session_id"), {"type": "user"},
                  current_user().id), 202


@operation(bp, "POST", "/projects/<uuid:project_id>/flows/<name>/estimate", body=schemas.ESTIMATE_FLOW,
           body_optional=True, summary="Estimate a flow run without starting it: steps by kind, the most agent "
                                       "calls, what its last runs here spent, and its caps")
def estimate_flow(project_id: uuid.UUID, name: str, body):
    with state().db.transaction() as session:
        project, _ = require_project(session, project_id, Role.MEMBER)
        root = project.root_path
    entry = _find(root, name)
    launch.validate_input(entry.name, entry.definition.input_schema, body.get("input"))  # as a start checks it
    with state().db.transaction() as session:
        return {"estimate": launch.estimate(session, project_id, root, entry)}


def _flow_run(session, run_id: uuid.UUID, needed: Role):
    return launch.require_flow_run(load_visible_run(session, run_id, needed))


@operation(bp, "GET", "/flow-runs/<uuid:run_id>",
           summary="A flow run and its steps: state, attempt, timing, tokens and cost of each, the outcome")
def flow_run_status(run_id: uuid.UUID):
    with state().db.transaction() as session:
        return launch.report(session, _flow_run(session, run_id, Role.VIEWER))


@operation(bp, "POST", "/flow-runs/<uuid:run_id>/cancel",
           summary="Cancel a flow run: every unfinished step is cancelled, and its child runs")
def cancel_flow_run(run_id: uuid.UUID):
    with state().db.transaction() as session:
        run = _flow_run(session, run_id, Role.MEMBER)
        run, going = launch.cancel(session, run, subagents.Limits.from_settings(state().settings))
        body = {"run": runs.serialize_run(run)}
        to_start = [(started.kind, started.id) for started in going]
    for kind, started_id in to_start:
        state().queue.enqueue_run(kind, started_id)
    return body


@operation(bp, "POST", "/flow-runs/<uuid:run_id>/rerun", body=schemas.RERUN_FLOW,
           summary="Run a finished flow run again from a step (earlier results reused as they are), "
                   "optionally with new input")
def rerun_flow_run(run_id: uuid.UUID, body):
    with state().db.transaction() as session:
        run = _flow_run(session, run_id, Role.MEMBER)
        run = launch.rerun(session, run, body["from_step"], body.get("input"), input_given="input" in body)
        out = {"run": runs.serialize_run(run)}
    state().queue.enqueue_run(run.kind, run_id)
    return out, 202


@operation(bp, "POST", "/projects/<uuid:project_id>/flows/<name>/triggers", status=201,
           summary="Create a trigger token for one flow (owners only); the token is shown once")
def create_trigger(project_id: uuid.UUID, name: str):
    with state().db.transaction() as session:
        project, _ = require_project(session, project_id, Role.OWNER)
        root = project.root_path
    _find(root, name)
    with state().db.transaction() as session:
        trigger, plain = store.create_trigger(session, project_id, name, current_user().id)
        return {"trigger": store.serialize_trigger(trigger), "token": plain}, 201


@operation(bp, "GET", "/projects/<uuid:project_id>/flows/triggers",
           summary="The project's trigger tokens (owners only): id, flow, who created it and when; never the token")
def list_triggers(project_id: uuid.UUID):
    with state().db.transaction() as session:
        require_project(session, project_id, Role.OWNER)
        return {"triggers": [store.serialize_trigger(trigger) for trigger in store.list_triggers(session, project_id)]}


@operation(bp, "DELETE", "/flow-triggers/<uuid:trigger_id>",
           summary="Revoke a trigger token (owners of its project): from then on it starts nothing")
def revoke_trigger(trigger_id: uuid.UUID):
    with state().db.transaction() as session:
        trigger = store.load_trigger(session, trigger_id)
        if trigger is None:
            raise NotFoundError(f"flow trigger {trigger_id} does not exist")
        require_project(session, trigger.project_id, Role.OWNER, resource=f"flow trigger {trigger_id}")
        store.revoke_trigger(session, trigger)
        return {"trigger": store.serialize_trigger(trigger)}


@operation(bp, "POST", "/flows/<uuid:trigger_id>/trigger", body=schemas.TRIGGER_FLOW, body_optional=True,
           status=202, public=True,
           summary="Start the trigger's flow with its token (`Authorization: Bearer <trigger token>`), e.g. from CI")
def trigger_flow(trigger_id: uuid.UUID, body):
    with state().db.transaction() as session:
        trigger = store.load_trigger(session, trigger_id)
        if trigger is None:
            raise NotFoundError(f"no flow trigger {trigger_id}")
        plain = presented_token()
        if plain is None or not store.token_matches(trigger, plain):
            raise HttpError(401, "unauthenticated", "send this trigger's token as 'Authorization: Bearer <token>' "
                            "(an owner creates one with POST /api/projects/{id}/flows/{name}/triggers)")
        project_id, name, creator = trigger.project_id, trigger.flow_name, trigger.created_by
    return _start(project_id, name, body.get("input"), None, {"type": "trigger", "trigger_id": str(trigger_id)},
                  creator), 202
