"""Starting, checking, resuming and reporting workflow runs (what the REST API and CLI call).

A workflow run keeps everything needed to run it again with the run: the script text, where it
came from (`origin`: a catalog/project/personal name, a project path, or inline), the `args`
verbatim, the caps, and its pass number. `resume` re-reads the script from its origin (so an edited
file takes effect), bumps the pass and queues the run: unchanged calls are served from the journal.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.domain.enums import RunKind, RunStatus
from orchestrator.errors import ConflictError, ValidationError
from orchestrator.store import runs, workflows
from orchestrator.store.events import append_event
from orchestrator.store.models import ChatSession, Project, Run, WorkflowCall
from orchestrator.workflow.catalog import discover, read_project_script
from orchestrator.workflow.sandbox import Sandbox, SandboxError
from orchestrator.workflow.script import ScriptError, WorkflowScript, load_script

MAX_ARGS_BYTES = 256 * 1024


def resolve_script(project: Project, personal_dir: Path | None, *, name: str | None = None, path: str | None = None,
                   script: str | None = None) -> tuple[WorkflowScript, dict[str, Any]]:
    """The script to run and its origin; ValidationError (with the line) when it is refused."""
    if sum(value is not None for value in (name, path, script)) != 1:
        raise ValidationError("give exactly one of `name`, `path` or `script`")
    root = Path(project.root_path)
    try:
        if name is not None:
            found, problems = discover(root, personal_dir)
            if name not in found:
                raise ValidationError(f"no workflow named {name!r}", details={
                    "known": sorted(found), "problems": problems})
            entry = found[name]
            return entry.script, {"type": entry.source, "name": name, "path": entry.path}
        if path is not None:
            return load_script(read_project_script(root, path)), {"type": "path", "path": path}
        return load_script(script or ""), {"type": "inline"}
    except ScriptError as error:
        raise ValidationError(f"the workflow script is refused: {error}",
                              details={"line": error.line, "message": error.message}) from None


def check_compiles(script: WorkflowScript, args: Any, timeout_seconds: float = 2.0) -> dict[str, Any]:
    """Compile and start the script with no agent answering: syntax errors (with the line) are refused,
    and the agents it asks for before its first await are counted (the first wave). It runs in a
    sandbox process of this process's pool, never here: a script whose top level crashes V8 is
    refused with `script_crashed`, one that runs past the time limit with `script_timeout`."""
    try:
        with Sandbox(script, args, timeout_seconds=timeout_seconds) as sandbox:
            sandbox.start()
            first_wave = sandbox.take_calls()
            state = sandbox.state()
    except SandboxError as error:
        where = f"line {error.line}: " if error.line else ""
        raise ValidationError(f"the workflow script is refused: {where}{error.message}",
                              details={"line": error.line, "message": error.message, "code": error.code,
                                       "signal": error.signal}) from None
    if state["done"] and state["error"] is not None:
        problem = state["error"]
        where = f"line {problem['line']}: " if problem.get("line") else ""
        raise ValidationError(f"the workflow script fails at once: {where}{problem['name']}: {problem['message']}",
                              details={"line": problem["line"], "message": problem["message"],
                                       "code": problem.get("code") or "script_error"})
    return {"first_wave": [{"kind": call.get("kind"), "label": (call.get("options") or {}).get("label"),
                            "phase": (call.get("options") or {}).get("phase"), "prompt": call.get("prompt", "")[:200]}
                           for call in first_wave]}


def estimate(session: Session, project_id: uuid.UUID, name: str, first_wave: int, caps: dict[str, Any],
             max_agents: int) -> dict[str, Any]:
    """What a launch will likely cost, before it starts: the agents the script asks for at once, what the
    last (up to 10) finished runs of this workflow in the project spent, and the hard bounds the caps set."""
    past = session.scalars(select(Run).where(
        Run.project_id == project_id, Run.kind == RunKind.WORKFLOW.value, Run.input["meta"]["name"].astext == name,
        Run.status.in_([RunStatus.COMPLETED, RunStatus.COMPLETED_WITH_FAILURES]))
        .order_by(Run.created_at.desc()).limit(10))
    history = spending_history([workflows.totals(session, run.id) for run in past])
    return {"first_wave_agents": first_wave, "history": history,
            "bounds": {"max_agents": min(int(caps.get("max_agents") or max_agents), max_agents),
                       "max_tokens": caps.get("max_tokens")}}


def spending_history(figures: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What past runs spent ({agents, tokens, cost} each), as an estimate shows it; None without any.
    The flow estimate (orchestrator/flows/launch.py) shows its history the same way."""
    if not figures:
        return None
    count = len(figures)
    return {"runs": count,
            "agents_avg": round(sum(figure["agents"] for figure in figures) / count, 1),
            "tokens_avg": round(sum(figure["tokens"] for figure in figures) / count),
            "cost_avg": round(sum(figure["cost"] for figure in figures) / count, 6),
            "cost_max": max(figure["cost"] for figure in figures)}


def describe_script(script: WorkflowScript) -> dict[str, Any]:
    meta = script.meta
    return {"name": script.name, "description": meta.get("description", ""), "whenToUse": meta.get("whenToUse"),
            "phases": meta.get("phases", []), "args": meta.get("args"), "example": meta.get("example")}


def validate_args(args: Any, script: WorkflowScript | None = None) -> Any:
    """Size-capped, and checked against the script's `meta.args` JSON Schema when it declares one."""
    if len(json.dumps(args)) > MAX_ARGS_BYTES:
        raise ValidationError(f"args are larger than {MAX_ARGS_BYTES} bytes as JSON")
    schema = script.meta.get("args") if script is not None else None
    if script is not None and schema is not None:
        problems = [{"path": "args/" + "/".join(map(str, error.absolute_path)), "message": error.message}
                    for error in sorted(Draft202012Validator(schema).iter_errors({} if args is None else args),
                                        key=lambda error: list(error.absolute_path))]
        if problems:
            raise ValidationError(f"the args do not fit what workflow {script.name!r} takes (its meta.args)",
                                  details=problems)
    return args


def create_workflow_run(session: Session, chat: ChatSession, user_id: uuid.UUID | None, script: WorkflowScript,
                        origin: dict[str, Any], args: Any, caps: dict[str, Any]) -> Run:
    run = runs.create_run(session, project_id=chat.project_id, session_id=chat.id, kind=RunKind.WORKFLOW.value,
                          input={"script": script.source, "origin": origin, "args": args, "caps": caps, "pass": 1,
                                 "meta": describe_script(script)},
                          created_by=user_id)
    append_event(session, chat.id, "workflow.started", {"name": script.name, "origin": origin, "caps": caps,
                                                        "phases": script.meta.get("phases", [])}, run_id=run.id)
    return run


def resume_workflow_run(session: Session, run: Run, project: Project, personal_dir: Path | None,
                        script_text: str | None = None) -> Run:
    """Run a finished, failed or stopped workflow run again from its journal."""
    if run.kind != RunKind.WORKFLOW.value:
        raise ValidationError(f"run {run.id} is a {run.kind} run, not a workflow run")
    session.refresh(run, with_for_update=True)
    if not RunStatus(run.status).is_terminal:
        raise ConflictError(f"run {run.id} is still {run.status}; cancel it first or wait for it",
                            details={"status": run.status})
    origin = run.input.get("origin") or {"type": "inline"}
    if script_text is not None:
        script, origin = resolve_script(project, personal_dir, script=script_text)
    elif origin["type"] == "inline":
        script, _ = resolve_script(project, personal_dir, script=run.input["script"])
    elif origin["type"] == "path":
        script, origin = resolve_script(project, personal_dir, path=origin["path"])
    else:
        script, origin = resolve_script(project, personal_dir, name=origin["name"])
    check_compiles(script, run.input.get("args"))
    pass_number = int(run.input.get("pass", 1)) + 1
    workflows.clear_refusals(session, run.id)
    run.input = {**run.input, "script": script.source, "origin": origin, "pass": pass_number,
                 "meta": describe_script(script)}
    run.status, run.result, run.error, run.finished_at = RunStatus.QUEUED, None, None, None
    run.lease_owner, run.lease_expires_at = None, None
    run.replayed_at = None  # a new pass starts with a replay
    session.flush()
    append_event(session, run.session_id, "workflow.resumed", {"pass": pass_number, "origin": origin}, run_id=run.id)
    return run


def outcome(run: Run) -> dict[str, Any]:
    """The run's end as one shape: a finished run keeps failures and totals in `result`, a failed one in
    `error`."""
    found = run.result or run.error or {}
    return {"status": run.status, "value": (run.result or {}).get("value"), "failures": found.get("failures") or [],
            "summary": found.get("summary"), "error": run.error}


def status_report(session: Session, run: Run) -> dict[str, Any]:
    """What a person watching the run wants: phases, agents, log, failures, totals, outcome."""
    pass_number = int(run.input.get("pass", 1))
    calls = list(session.scalars(select(WorkflowCall).where(WorkflowCall.run_id == run.id).order_by(WorkflowCall.id)))
    agents = [workflows.serialize_call(call, pass_number) for call in calls]
    isolated = [call.child_run_id for call in calls if (call.options or {}).get("isolation") and call.child_run_id]
    worktrees = {str(child.id): ((child.result if isinstance(child.result, dict) else None) or child.error or {})
                 .get("worktree") for child in session.scalars(select(Run).where(Run.id.in_(isolated)))} \
        if isolated else {}
    for agent in agents:
        agent["worktree"] = worktrees.get(agent["child_run_id"] or "")
    meta = run.input.get("meta") or {}
    phases: list[dict[str, Any]] = [{"title": title, "agents": []} for title in meta.get("phases", [])]
    by_title = {phase["title"]: phase for phase in phases}
    for agent in agents:
        title = agent["phase"]
        if title not in by_title:
            by_title[title] = {"title": title, "agents": []}
            phases.append(by_title[title])
        by_title[title]["agents"].append(agent["key"])
    counts: dict[str, int] = {}
    for agent in agents:
        counts[agent["status"]] = counts.get(agent["status"], 0) + 1
    ended = outcome(run)
    return {"run": {**runs.serialize_run(run), "input": None}, "meta": meta, "origin": run.input.get("origin"),
            "args": run.input.get("args"), "caps": run.input.get("caps"), "pass": pass_number,
            "ticks": run.claims, "replays": run.replays, "phases": phases,
            "agents": agents, "counts": counts, "cached": sum(1 for agent in agents if agent["cached"]),
            "totals": workflows.totals(session, run.id),
            "logs": [workflows.serialize_log(entry) for entry in workflows.list_logs(session, run.id)],
            "failures": ended["failures"], "value": ended["value"], "error": ended["error"]}
