"""Workflows: list what a project can run, run one in a session (or dry-run it), follow, resume."""

from __future__ import annotations

import uuid
from pathlib import Path

from flask import Blueprint

from orchestrator.domain.enums import Role, RunKind
from orchestrator.errors import NotFoundError
from orchestrator.store import projects, runs
from orchestrator.workflow import launch
from orchestrator.workflow.catalog import discover
from web import schemas
from web.api import operation
from web.auth import current_user, load_visible_run, load_visible_session, require_project
from web.state import state

bp = Blueprint("workflows", __name__, url_prefix="/api")


def _personal_dir() -> Path:
    return state().settings.data_dir / "workflows"


@operation(bp, "GET", "/projects/<uuid:project_id>/workflows",
           summary="Workflows this project can run (project, personal, built-in), and files that were refused")
def list_workflows(project_id: uuid.UUID):
    with state().db.transaction() as session:
        project, _ = require_project(session, project_id, Role.VIEWER)
        root = project.root_path
    found, problems = discover(Path(root), _personal_dir())
    return {"workflows": [entry.describe() for entry in sorted(found.values(), key=lambda entry: entry.name)],
            "problems": problems}


@operation(bp, "POST", "/sessions/<uuid:session_id>/workflows", body=schemas.RUN_WORKFLOW, status=202,
           summary="Run a workflow (by name, project path or inline script) in a session; `dry_run` only checks it")
def run_workflow(session_id: uuid.UUID, body):
    with state().db.transaction() as session:
        chat = load_visible_session(session, session_id, Role.MEMBER)
        project = projects.load_project(session, chat.project_id)
        script, origin = launch.resolve_script(project, _personal_dir(), name=body.get("name"), path=body.get("path"),
                                               script=body.get("script"))
    args = launch.validate_args(body.get("args"), script)
    check = launch.check_compiles(script, args, state().settings.workflow_script_timeout_seconds)
    if body.get("dry_run"):
        with state().db.transaction() as session:
            guess = launch.estimate(session, project.id, script.name, len(check["first_wave"]), body.get("caps") or {},
                                    state().settings.workflow_max_agents)
        return {"dry_run": {**launch.describe_script(script), "origin": origin, **check, "estimate": guess}}, 200
    with state().db.transaction() as session:
        chat = load_visible_session(session, session_id, Role.MEMBER)
        run = launch.create_workflow_run(session, chat, current_user().id, script, origin, args, body.get("caps") or {})
        body_out = {"run": runs.serialize_run(run)}
    state().queue.enqueue_run(run.kind, run.id)
    return body_out, 202


def _workflow_run(session, run_id: uuid.UUID, needed: Role):
    run = load_visible_run(session, run_id, needed)
    if run.kind != RunKind.WORKFLOW.value:
        raise NotFoundError(f"run {run_id} is not a workflow run")
    return run


@operation(bp, "GET", "/runs/<uuid:run_id>/workflow",
           summary="A workflow run's progress: phases, agents (status, model, tokens, cost, cached), log, failures")
def workflow_status(run_id: uuid.UUID):
    with state().db.transaction() as session:
        return launch.status_report(session, _workflow_run(session, run_id, Role.VIEWER))


@operation(bp, "GET", "/runs/<uuid:run_id>/result", summary="A workflow run's outcome: value, failures, error")
def workflow_result(run_id: uuid.UUID):
    with state().db.transaction() as session:
        return launch.outcome(_workflow_run(session, run_id, Role.VIEWER))


@operation(bp, "POST", "/runs/<uuid:run_id>/resume", body=schemas.RESUME_WORKFLOW, body_optional=True,
           summary="Run a finished, failed or cancelled workflow again: unchanged agent calls come from the journal")
def resume_workflow(run_id: uuid.UUID, body):
    with state().db.transaction() as session:
        run = _workflow_run(session, run_id, Role.MEMBER)
        project = projects.load_project(session, run.project_id)
        run = launch.resume_workflow_run(session, run, project, _personal_dir(), body.get("script"))
        out = {"run": runs.serialize_run(run)}
    state().queue.enqueue_run(RunKind.WORKFLOW.value, run_id)
    return out
