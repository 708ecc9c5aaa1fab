"""Estimating, starting, reporting, cancelling and rerunning flow runs (what the REST API and the CLI call).

A flow run keeps the definition it started with (text and parsed data) in its input, so editing a
file never changes a run under way; a rerun uses that same definition. Input is checked against the
flow's `input` schema before anything is written (ValidationError -> 422).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from sqlalchemy.orm import Session

from orchestrator import lifecycle
from orchestrator.domain.enums import RunKind, RunStatus
from orchestrator.errors import ConflictError, NotFoundError, ValidationError
from orchestrator.flows import caps, operations
from orchestrator.flows.definition import FlowBody, SwitchBody
from orchestrator.flows.discovery import FlowEntry, discover
from orchestrator.flows.records import records_of
from orchestrator.flows.runner import definition_of
from orchestrator.store import flows as store
from orchestrator.store import runs, subagents
from orchestrator.store.events import append_event
from orchestrator.store.models import ChatSession, Run
from orchestrator.workflow.launch import spending_history

MAX_INPUT_BYTES = 256 * 1024


def validate_input(entry_name: str, schema: Any, flow_input: Any) -> Any:
    """Size-capped, and checked against the flow's `input` JSON Schema when it declares one."""
    if len(json.dumps(flow_input)) > MAX_INPUT_BYTES:
        raise ValidationError(f"the input is larger than {MAX_INPUT_BYTES} bytes as JSON")
    if schema is not None:
        errors = Draft202012Validator(schema).iter_errors({} if flow_input is None else flow_input)
        problems = [{"path": "input/" + "/".join(map(str, error.absolute_path)), "message": error.message}
                    for error in sorted(errors, key=lambda error: list(error.absolute_path))]
        if problems:
            raise ValidationError(f"the input does not fit what flow {entry_name!r} takes (its `input` schema): "
                                  f"{problems[0]['message']}", details=problems)
    return flow_input


def start(session: Session, chat: ChatSession, user_id: uuid.UUID | None, entry: FlowEntry, flow_input: Any,
          trigger: dict[str, Any]) -> Run:
    """A queued flow run of `entry` in `chat` (the caller enqueues it after the commit)."""
    flow_input = validate_input(entry.name, entry.definition.input_schema, flow_input)
    flow = {"name": entry.name, "source": entry.source, "path": entry.path, "text": entry.text, "data": entry.data}
    return store.create_flow_run(session, chat, user_id, flow, [step.id for step in entry.definition.steps],
                                 flow_input, trigger)


def estimate(session: Session, project_id: uuid.UUID, root: str, entry: FlowEntry) -> dict[str, Any]:
    """What a run of `entry` will likely call and cost, before it starts (the workflow engine's dry run,
    for a declared DAG): the steps by kind, the most agent calls (caps.outline: retries and every switch
    branch counted; nested flows through their definitions, found as a run would find them), what the
    last (up to 10) completed runs of this flow in the project spent, and the caps that bound it."""
    nested_found, _ = discover(Path(root), None)  # as runner._nested_flow looks them up
    names = {step.body.flow for step in entry.definition.steps if isinstance(step.body, FlowBody)}
    nested = {name: nested_found[name].definition if name in nested_found else None for name in names}
    past = store.finished_runs_of(session, project_id, entry.name)
    history = spending_history([store.spending(session, store.load_steps(session, run.id).values(),
                                               current_only=False) for run in past])
    return {"flow": entry.name, "description": entry.definition.description,
            **caps.outline(entry.definition, nested), "history": history, "bounds": caps.bounds(entry.definition.caps)}


def require_flow_run(run: Run) -> Run:
    if run.kind != RunKind.FLOW.value:
        raise NotFoundError(f"run {run.id} is not a flow run")
    return run


def report(session: Session, run: Run) -> dict[str, Any]:
    """The run and each step: kind, deps, switch branches, state, attempt, timing, tokens, cost."""
    definition = definition_of(run)
    rows = store.load_steps(session, run.id)
    steps = []
    for step in definition.steps:
        shown = store.serialize_step(rows[step.id]) if step.id in rows else {"id": step.id, "state": "pending"}
        branches = list(step.body.targets) if isinstance(step.body, SwitchBody) else []
        steps.append({**shown, "kind": step.kind.value, "deps": list(definition.graph.upstream[step.id]),
                      "branches": branches, "batch": step.batch, "line": step.line})
    counts: dict[str, int] = {}
    for entry in steps:
        counts[entry["state"]] = counts.get(entry["state"], 0) + 1
    flow = run.input.get("flow") or {}
    result = run.result if isinstance(run.result, dict) else {}
    return {"run": {**runs.serialize_run(run), "input": None},
            "flow": {"name": flow.get("name"), "source": flow.get("source"), "path": flow.get("path"),
                     "description": definition.description},
            "input": run.input.get("input"), "trigger": run.input.get("trigger"), "steps": steps, "counts": counts,
            "totals": store.totals(rows.values()), "value": result.get("value"),
            "failures": result.get("failures") or (run.error or {}).get("failures") or [],
            "blocked": result.get("blocked") or [], "error": run.error}


def cancel(session: Session, run: Run, limits: subagents.Limits) -> tuple[Run, list[Run]]:
    """Cancel the run, its children and every step that has not settled (operations.cancel). The run row
    is locked first (lifecycle.cancel), so a tick under way sees the cancellation at its next write."""
    run, going = lifecycle.cancel(session, run.id, limits, reason="the flow run was cancelled")
    definition = definition_of(run)
    rows = store.load_steps(session, run.id)
    decided = operations.cancel(definition, records_of(rows))
    for mark in decided.mark:
        store.end_step(session, run, rows[mark.step], mark.state, error=dict(mark.error) if mark.error else None,
                       reason=mark.reason)
    return run, going


def rerun(session: Session, run: Run, from_step: str, new_input: Any = None, *, input_given: bool = False) -> Run:
    """Run a finished flow run again from `from_step`: that step and everything downstream go back to
    pending; every other step keeps its result as it is. Optionally with new input."""
    session.refresh(run, with_for_update=True)
    if not RunStatus(run.status).is_terminal:
        raise ConflictError(f"flow run {run.id} is still {run.status}; cancel it or wait for it first",
                            details={"status": run.status})
    definition = definition_of(run)
    if from_step not in definition.by_id:
        raise ValidationError(f"flow {definition.name!r} has no step {from_step!r}",
                              details={"steps": [step.id for step in definition.steps]})
    flow_input = run.input.get("input")
    if input_given:
        flow_input = validate_input(definition.name, definition.input_schema, new_input)
    rows = store.load_steps(session, run.id)
    decided = operations.rerun_from(definition, records_of(rows), from_step)
    for step_id in decided.reset:
        store.reset_step(session, run, rows[step_id], decided.records[step_id])
    run.input = {**run.input, "input": flow_input}
    run.status, run.result, run.error, run.finished_at = RunStatus.QUEUED, None, None, None
    run.lease_owner, run.lease_expires_at, run.tick_pending = None, None, False
    session.flush()
    append_event(session, run.session_id, "flow.rerun", {"from_step": from_step, "reset": list(decided.reset),
                                                         "new_input": input_given}, run_id=run.id)
    return run
