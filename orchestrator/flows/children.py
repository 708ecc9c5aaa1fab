"""A flow step's child runs: starting an agent or nested flow step's attempt, cancelling one.

    dispatch_child(session, run, definition, rows, step, attempt, input) -> [child to enqueue]
        agent step -> a child agent run keyed by (run, step, attempt), its prompt rendered
        flow step  -> a child flow run of the named flow (or the step fails: unknown, nested twice)
    cancel_child(session, context, child_id, limits, reason) -> [runs to enqueue]

Both write in the caller's fenced transaction (orchestrator/flows/runner.py); the caller enqueues
after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from orchestrator import lifecycle
from orchestrator.domain.enums import RunKind, RunStatus
from orchestrator.flows.definition import AgentBody, FlowBody, FlowDefinition, Step
from orchestrator.flows.discovery import discover
from orchestrator.flows.expressions import render_template
from orchestrator.flows.records import records_of, step_views
from orchestrator.flows.rules import StepState
from orchestrator.lifecycle import RunContext
from orchestrator.store import flows as store
from orchestrator.store import runs, subagents
from orchestrator.store.models import FlowStep, Run
from orchestrator.store.workflows import project_root


def cancel_child(session: Session, context: RunContext, child_id: Any, limits: subagents.Limits,
                 reason: str) -> list[Run]:
    """Cancel a step's child run the one way runs are cancelled (lifecycle.cancel); returns what that
    sets going, to enqueue after the commit. It also asks to wake this run, which is ticking already:
    clear the flag again rather than enqueue itself (a later finishing child must still wake it)."""
    child = session.get(Run, child_id, populate_existing=True)
    if child is None or RunStatus(child.status).is_terminal:
        return []
    _, going = lifecycle.cancel(session, child_id, limits, reason=reason)
    runs.take_tick(session, context.lease)
    return [other for other in going if other.id != context.run.id]


def _prompt(step: Step, flow_input: Any, views: dict[str, Any]) -> str:
    assert isinstance(step.body, AgentBody)
    return render_template(step.body.prompt, flow_input, views)


def _agent_spec(run: Run, step: Step, attempt: int) -> dict[str, Any]:
    """A workflow agent()'s options, the way the agent runtime reads them from the child's spec."""
    assert isinstance(step.body, AgentBody)
    body = step.body
    options = {"label": body.label or step.id, "agentType": body.agent_type, "model": body.model,
               "effort": body.effort, "schema": body.schema, "isolation": body.isolation}
    return {"key": f"{step.id}#{attempt}", "flow_run_id": str(run.id), "step": step.id, "attempt": attempt,
            **{name: value for name, value in options.items() if value is not None}}


def dispatch_child(session: Session, run: Run, definition: FlowDefinition, rows: dict[str, FlowStep], step: Step,
                    attempt: int, flow_input: Any) -> list[Run]:
    """Start (or adopt) the child run of an agent or flow step's attempt; the row runs it."""
    now = datetime.now(timezone.utc)
    views = step_views(definition, records_of(rows))
    row = rows[step.id]
    if isinstance(step.body, AgentBody):
        child = store.start_child(session, run, step.id, attempt, RunKind.AGENT.value,
                                  {"spec": _agent_spec(run, step, attempt)}, _prompt(step, flow_input, views))
    else:
        nested = _nested_flow(session, run, step, flow_input, views)
        if isinstance(nested, NestedRefused):
            store.start_attempt(session, run, row, attempt, None, now)
            store.end_step(session, run, row, StepState.FAILED, error=nested.error)
            return []
        child = store.start_child(session, run, step.id, attempt, RunKind.FLOW.value, nested, None)
        store.create_steps(session, child.id, [nested_step["id"] for nested_step in nested["flow"]["data"]["steps"]])
    store.start_attempt(session, run, row, attempt, child.id, now)
    return [child] if child.status == RunStatus.QUEUED else []


@dataclass(frozen=True)
class NestedRefused:
    """A flow step's nested flow cannot start: `error` fails the step (not retried)."""

    error: dict[str, Any]


def _nested_flow(session: Session, run: Run, step: Step, flow_input: Any, views: dict[str, Any]
                 ) -> dict[str, Any] | NestedRefused:
    """The input of a nested flow's run, or why it cannot start (an unknown flow, a second level)."""
    assert isinstance(step.body, FlowBody)
    if run.parent_id is not None:
        return NestedRefused({"code": "flow_nesting", "retryable": False,
                              "message": "a nested flow cannot run another flow (one level of nesting, like "
                                         "workflows)"})
    found, _ = discover(Path(project_root(session, run.project_id)), None)
    entry = found.get(step.body.flow)
    if entry is None:
        return NestedRefused({"code": "unknown_flow", "retryable": False,
                              "message": f"no flow named {step.body.flow!r}; known: {', '.join(sorted(found))}"})
    nested_input = _render_values(step.body.input, flow_input, views)
    return {"flow": {"name": entry.name, "source": entry.source, "path": entry.path, "text": entry.text,
                     "data": entry.data},
            "input": nested_input, "trigger": {"type": "flow_step", "run_id": str(run.id), "step": step.id}}


def _render_values(value: Any, flow_input: Any, views: dict[str, Any]) -> Any:
    """A nested flow's input: every string in it is a template."""
    if isinstance(value, str):
        return render_template(value, flow_input, views)
    if isinstance(value, list):
        return [_render_values(item, flow_input, views) for item in value]
    if isinstance(value, dict):
        return {key: _render_values(item, flow_input, views) for key, item in value.items()}
    return value
