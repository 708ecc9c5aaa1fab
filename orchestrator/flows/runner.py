"""The `flow` run kind: short ticks that apply the pure scheduler's decisions to a flow run.

    tick(flow run):
        one transaction: fence, take the tick, reconcile every step from its child run
            (operations.reconcile: settle finished children, fail or retry died ones, cancel the
            child of an attempt that already ended, re-dispatch an attempt whose child is missing)
        repeat (a code step or a mark may unblock more steps in the same tick):
            plan = scheduler.plan(definition, records, now, guard answers)
            guards asked for -> evaluate them in the sandbox, plan again with the answers
            code steps dispatched -> run them in the sandbox (outside any transaction; one evaluator,
                so one isolate, for the whole tick)
            a plan that only runs code steps and marks steps is held (its records as it leaves them
                plan the next), up to BATCH_PLANS or BATCH_SECONDS; then all held plans are written
            one fenced transaction, on the rows the tick holds (past the fence nobody else writes
                them: a cancellation fails the fence first), each plan in turn: time_out (cancel
                the child), mark, dispatch (agent and flow steps as child runs keyed by (run, step,
                attempt); code steps with their result);
                an agent or flow step is dispatched only while caps.check(flow caps, spent) says
                so, else it fails with `flow_cap` (not retried) and the loop plans again
            enqueue the new children after the commit
        plan.finish -> Finish(completed | completed_with_failures | failed), with the rendered output
        else        -> Defer: a finishing child wakes the run (`parent_to_wake`); a retry backoff or
                       a timeout with nothing finishing is picked up by the recovery sweep

No tick waits for a child: a worker slot is held only while the plan is made and applied. A child
that finishes while a tick runs is noticed when the tick hands the lease back (`Defer.wake`). A
late result of an attempt that timed out is never recorded: only the child of the attempt the
row is running is looked at, and `operations.accept_result` checks that attempt again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from orchestrator.domain.enums import RunKind, RunStatus
from orchestrator.errors import RunCancelledError
from orchestrator.flows import caps, children, operations, scheduler
from orchestrator.flows.definition import AgentBody, CodeBody, FlowBody, FlowDefinition, Step, StepKind, build
from orchestrator.flows.evaluation import CodeResult, Evaluator, Limits, evaluate_codes, evaluate_guards, evaluator_for
from orchestrator.flows.records import StepRecord, record_of_row, records_of, step_views
from orchestrator.flows.rules import StepState
from orchestrator.jobs import task_for_kind
from orchestrator.lifecycle import Continue, Defer, Finish, Handler, RunContext, RunOutcome
from orchestrator.settings import Settings
from orchestrator.store import flows as store
from orchestrator.store import runs, subagents
from orchestrator.store.models import FlowStep, Run

logger = logging.getLogger(__name__)
MAX_PLANS_PER_TICK = 50  # code steps chain within a tick; past this the next tick goes on
BATCH_PLANS = 25  # plans that only run code steps, written in one transaction at most
BATCH_SECONDS = 0.1  # ... and written no later than this after the first of them was made


@dataclass(frozen=True)
class FlowConfig:
    limits: Limits = Limits()
    subagent_limits: subagents.Limits = subagents.Limits(server=8, per_user=4)
    personal_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "FlowConfig":
        return cls(limits=Limits(timeout_seconds=settings.workflow_script_timeout_seconds,
                                 memory_bytes=settings.workflow_memory_mb * 1024 * 1024,
                                 pool_size=settings.workflow_sandbox_processes),
                   subagent_limits=subagents.Limits.from_settings(settings), personal_dir=settings.data_dir / "flows")


def handler_from_settings(settings: Settings) -> Handler:
    """The `flow` kind's handler (orchestrator/runkinds.py)."""
    config = FlowConfig.from_settings(settings)

    def handle(context: RunContext) -> RunOutcome:
        return tick(context, config)

    return handle


def code_of(definition: FlowDefinition, step_id: str) -> str:
    body = definition.step(step_id).body
    if not isinstance(body, CodeBody):
        raise TypeError(f"step {step_id!r} is not a code step")
    return body.code


def definition_of(run: Run) -> FlowDefinition:
    """The definition the run started with (kept in its input, so an edited file changes no run)."""
    return build(run.input["flow"]["data"])


def tick(context: RunContext, config: FlowConfig) -> RunOutcome:
    run = context.run
    definition = definition_of(run)
    with context.db.transaction() as session:
        _fence(session, context)
        runs.take_tick(session, context.lease)
        rows = store.load_steps(session, run.id)
        store.create_steps(session, run.id, [step.id for step in definition.steps if step.id not in rows])
        rows = store.load_steps(session, run.id)
        started = _reconcile(session, context, definition, rows, config)
        records = records_of(rows)
    _enqueue(context, started)
    with evaluator_for(config.limits) as evaluator:
        return _plan_and_apply(context, definition, rows, records, config, evaluator)


Batch = list[tuple[scheduler.Plan, dict[str, CodeResult]]]


def _plan_and_apply(context: RunContext, definition: FlowDefinition, rows: dict[str, FlowStep],
                    records: dict[str, StepRecord], config: FlowConfig, evaluator: Evaluator) -> RunOutcome:
    """Plan, run the code steps, write; again while that can unblock more. Plans that only run code
    steps and mark steps are written together (up to BATCH_PLANS, or BATCH_SECONDS after the first):
    the next plan is made on the records as they leave them. A crash before the write loses only that
    work, which has no effect outside the sandbox; the next tick does it again."""
    flow_input = context.run.input.get("input")
    batch: Batch = []
    opened = 0.0
    for _ in range(MAX_PLANS_PER_TICK):
        plan = _plan_with_guards(definition, records, flow_input, config, evaluator)
        views = step_views(definition, records)
        code = evaluate_codes({dispatch.step: code_of(definition, dispatch.step) for dispatch in plan.dispatch
                               if dispatch.kind == StepKind.CODE}, flow_input, views, config.limits, evaluator)
        opened = opened if batch else time.monotonic()
        batch.append((plan, code))
        if _only_code(plan) and (code or plan.mark) and len(batch) < BATCH_PLANS and \
                time.monotonic() - opened < BATCH_SECONDS:
            records = _as_run(records, plan, code)
            continue
        records, refused, ended = _write(context, definition, rows, batch, flow_input, config)
        batch = []
        if ended is not None:
            return ended
        if not (code or plan.mark or plan.time_out or refused):
            break  # nothing this plan did can unblock another step before a child finishes
    else:
        if batch:
            _write(context, definition, rows, batch, flow_input, config)
        return Continue()  # more can run now (a long chain of code steps): the next tick at once, not a sweep
    return Defer(wake=lambda session: store.child_finished_unsettled(session, context.run.id), wake_at=plan.wake_at)


def _only_code(plan: scheduler.Plan) -> bool:
    """Whether the plan only runs code steps and marks steps: nothing starts or stops outside the sandbox."""
    return plan.finish is None and not plan.time_out and all(dispatch.kind == StepKind.CODE
                                                             for dispatch in plan.dispatch)


def _write(context: RunContext, definition: FlowDefinition, rows: dict[str, FlowStep], batch: Batch,
           flow_input: Any, config: FlowConfig) -> tuple[dict[str, StepRecord], bool, RunOutcome | None]:
    """Apply the batch's plans in order in one fenced transaction, on the rows the tick holds (past the
    fence nobody else writes them: a cancellation fails the fence first). Returns the records as
    written, whether a cap refused a dispatch, and the run's ending when the last plan finishes it."""
    started: list[Run] = []
    refused = False
    with context.db.transaction() as session:
        _fence(session, context)
        session.add_all(rows[step] for step in {*(touched for plan, _ in batch for touched in _touches(plan))})
        for plan, code in batch:
            applied, refusing = _apply(session, context, definition, rows, plan, code, flow_input, config)
            started += applied
            refused = refused or refusing
        records = records_of(rows)
        last = batch[-1][0]
        if last.finish is not None:
            return records, refused, _finish(definition, records, rows, last.finish, flow_input)
    _enqueue(context, started)
    return records, refused, None


def _touches(plan: scheduler.Plan) -> list[str]:
    """The steps whose rows the plan writes."""
    return [*(item.step for item in plan.time_out), *(item.step for item in plan.mark),
            *(item.step for item in plan.dispatch)]


def _as_run(records: dict[str, StepRecord], plan: scheduler.Plan, code: dict[str, CodeResult]
            ) -> dict[str, StepRecord]:
    """The records as writing the plan will leave them (its marks, then its code steps' outcomes)."""
    after = _as_marked(records, plan)
    for dispatch in plan.dispatch:
        outcome = code[dispatch.step]
        now = datetime.now(timezone.utc)
        after[dispatch.step] = replace(
            after.get(dispatch.step, StepRecord()), state=StepState.COMPLETED if outcome.ok else StepState.FAILED,
            attempt=dispatch.attempt, started_at=outcome.started_at or now, finished_at=outcome.finished_at or now,
            result=outcome.value if outcome.ok else None, error=None if outcome.ok else outcome.error)
    return after


def _plan_with_guards(definition: FlowDefinition, records: dict[str, StepRecord], flow_input: Any,
                      config: FlowConfig, evaluator: Evaluator) -> scheduler.Plan:
    """Plan, evaluating the guards it asks for until it asks for none it has no answer to. A switch
    resolved in one plan can make its branches ask in the next: each round answers more steps."""
    answers: dict[str, scheduler.GuardAnswer] = {}
    while True:
        plan = scheduler.plan(definition, records, datetime.now(timezone.utc), answers)
        asked = [request for request in plan.evaluate_guards if request.step not in answers]
        if not asked:
            return plan
        views = step_views(definition, _as_marked(records, plan))
        for request in asked:
            answers[request.step] = evaluate_guards(request.expressions, flow_input, views, config.limits, evaluator)


def _as_marked(records: dict[str, StepRecord], plan: scheduler.Plan) -> dict[str, StepRecord]:
    """The records as the plan's marks leave them: a guard below a switch sees the switch's choice."""
    marked = dict(records)
    now = datetime.now(timezone.utc)
    for mark in plan.mark:
        before = marked.get(mark.step, StepRecord())
        marked[mark.step] = replace(before, state=mark.state, attempt=mark.attempt, result=mark.result,
                                    error=mark.error, started_at=before.started_at or now, finished_at=now)
    return marked


def _child_outcome(step: Step, child: Run) -> Any:
    """What a finished child gives its step: an agent's text (or its validated value with a schema),
    a nested flow's output value."""
    result = child.result if isinstance(child.result, dict) else {}
    if isinstance(step.body, FlowBody):
        return result.get("value")
    return result.get("value") if isinstance(step.body, AgentBody) and step.body.schema is not None \
        else result.get("text")


def _reconcile(session: Session, context: RunContext, definition: FlowDefinition, rows: dict[str, FlowStep],
               config: FlowConfig) -> list[Run]:
    """Decide every step from its child run (operations.reconcile); returns children to enqueue."""
    found = store.children_of(session, rows.values())
    usage = _usage_of_finished(session, found)
    started: list[Run] = []
    for step in definition.steps:
        row = rows[step.id]
        record = record_of_row(row)
        child = found.get(row.child_run_id) if row.child_run_id else None
        seen = operations.ChildRun(RunStatus(child.status), _child_outcome(step, child) if child else None,
                                   child.error) if child is not None else None
        if step.kind in (StepKind.SWITCH, StepKind.CODE) and seen is None and record.state == StepState.RUNNING:
            continue  # never left running by this runner (a code step settles in its dispatch)
        decision = operations.reconcile(step, record, seen)
        child_attempt = (int(((child.input or {}).get("spec") or {}).get("attempt", row.attempt)) if child
                         else row.attempt)
        if isinstance(decision, operations.CancelChild) and child is not None:
            started += children.cancel_child(session, context, child.id, config.subagent_limits,
                                             "its flow step already ended")
        elif isinstance(decision, operations.Redispatch):
            started += children.dispatch_child(session, context.run, definition, rows, step, decision.attempt,
                                       context.run.input.get("input"))
        elif isinstance(decision, (operations.MarkDone, operations.MarkFailed, operations.MarkCancelled,
                                   operations.Retry)) and child is not None:
            if not operations.accept_result(record, child_attempt):
                continue  # a stale attempt's late result: fenced out
            _settle(session, context.run, row, decision, child, usage.get(child.id))
    return started


def _usage_of_finished(session: Session, found: dict[Any, Run]) -> dict[Any, Any]:
    """Tokens, cost and model of each finished child: an agent's from its spans; a nested flow's agents
    have spans of their own, so a flow child's are the totals of its outcome (result, else error)."""
    finished = [child for child in found.values() if RunStatus(child.status).is_terminal]
    usage = store.usage_of(session, [child.id for child in finished if child.kind != RunKind.FLOW.value])
    for nested in finished:
        if nested.kind == RunKind.FLOW.value:
            ended = nested.result if isinstance(nested.result, dict) else \
                nested.error if isinstance(nested.error, dict) else {}
            totals = ended.get("totals") or {}
            usage[nested.id] = (int(totals.get("tokens") or 0), float(totals.get("cost") or 0.0), None)
    return usage


def _settle(session: Session, run: Run, row: FlowStep, decision: operations.Reconciliation, child: Run,
            usage: Any) -> None:
    if isinstance(decision, operations.MarkDone):
        store.end_step(session, run, row, StepState.COMPLETED, result=decision.result, finished_at=child.finished_at,
                       usage=usage)
    elif isinstance(decision, operations.MarkCancelled):
        store.end_step(session, run, row, StepState.CANCELLED, finished_at=child.finished_at, usage=usage,
                       error=child.error or {"code": "cancelled", "message": "the step's run was cancelled"})
    elif isinstance(decision, (operations.MarkFailed, operations.Retry)):
        # a retry is the scheduler's: a failed attempt with attempts left is retried after its backoff
        store.end_step(session, run, row, StepState.FAILED, error=dict(decision.error), finished_at=child.finished_at,
                       usage=usage)


def _apply(session: Session, context: RunContext, definition: FlowDefinition, rows: dict[str, FlowStep],
           plan: scheduler.Plan, code: dict[str, CodeResult], flow_input: Any, config: FlowConfig
           ) -> tuple[list[Run], bool]:
    """One plan, in the caller's fenced transaction: time outs, then marks, then dispatches. Returns the
    children to enqueue, and whether a cap refused a dispatch (that step failed: plan again)."""
    run = context.run
    started: list[Run] = []
    for time_out in plan.time_out:
        row = rows[time_out.step]
        if row.state != StepState.RUNNING or row.attempt != time_out.attempt:
            continue
        step = definition.step(time_out.step)
        child_id = row.child_run_id
        store.end_step(session, run, row, StepState.TIMED_OUT, timed_out=True, error={
            "code": "step_timeout", "message": f"attempt {row.attempt} ran past {step.timeout_seconds:g} s"})
        if child_id is not None:
            started += children.cancel_child(session, context, child_id, config.subagent_limits,
                                             f"flow step {step.id!r} timed out")
    for mark in plan.mark:
        store.end_step(session, run, rows[mark.step], StepState(mark.state), attempt=mark.attempt, result=mark.result,
                       error=dict(mark.error) if mark.error else None, reason=mark.reason)
    spent = _spent(session, definition, rows, plan)
    refused = False
    for dispatch in plan.dispatch:
        step = definition.step(dispatch.step)
        if isinstance(step.body, CodeBody):
            _record_code(session, run, rows[dispatch.step], dispatch.attempt, code[dispatch.step])
            continue
        reached = caps.check(definition.caps, spent) if spent is not None else None
        if reached is not None:
            _refuse(session, run, rows[dispatch.step], dispatch.attempt, reached)
            refused = True
            continue
        started += children.dispatch_child(session, run, definition, rows, step, dispatch.attempt, flow_input)
        if spent is not None and step.kind == StepKind.AGENT:
            spent = spent.plus_agent()
    session.flush()
    return started, refused


def _spent(session: Session, definition: FlowDefinition, rows: dict[str, FlowStep], plan: scheduler.Plan
           ) -> caps.Spent | None:
    """What the run's current results cost so far, counted only when a cap is set and the plan would
    start an agent or a nested flow (nothing else can spend)."""
    if not caps.is_capped(definition.caps) or all(dispatch.kind == StepKind.CODE for dispatch in plan.dispatch):
        return None
    return caps.Spent(**store.spending(session, rows.values()))


def _record_code(session: Session, run: Run, row: FlowStep, attempt: int, outcome: CodeResult) -> None:
    """A code step ran in the sandbox before this transaction: record its attempt and how it ended."""
    store.start_attempt(session, run, row, attempt, None, outcome.started_at or datetime.now(timezone.utc))
    if outcome.ok:
        store.end_step(session, run, row, StepState.COMPLETED, result=outcome.value, finished_at=outcome.finished_at)
    else:
        store.end_step(session, run, row, StepState.FAILED, error=outcome.error, finished_at=outcome.finished_at)


def _refuse(session: Session, run: Run, row: FlowStep, attempt: int, reached: caps.CapReached) -> None:
    """A cap is reached: the attempt fails at once, with no child run (like an unknown nested flow), and
    is not retried, so its dependents follow their trigger rules."""
    store.start_attempt(session, run, row, attempt, None, datetime.now(timezone.utc))
    store.end_step(session, run, row, StepState.FAILED, error=reached.error())
    logger.info("flow cap reached", extra={"run_id": str(run.id), "step": row.step_id, "cap": reached.cap})


def _finish(definition: FlowDefinition, records: dict[str, StepRecord], rows: dict[str, FlowStep],
            finish: scheduler.Finished | scheduler.Stuck, flow_input: Any) -> RunOutcome:
    """The run's honest ending: its output, each failed step with its error, the steps they blocked."""
    totals = store.totals(rows.values())
    if isinstance(finish, scheduler.Stuck):
        return Finish(RunStatus.FAILED, error={"code": "flow_stuck", "message": finish.reason,
                                               "waiting": list(finish.waiting), "totals": totals})
    failures = [{"step": failed.step, "state": failed.state.value, "error": failed.error} for failed in finish.failures]
    result = {"value": scheduler.render_output(definition, records, flow_input), "failures": failures,
              "blocked": list(finish.blocked), "totals": totals}
    status = RunStatus(finish.status)
    if status == RunStatus.FAILED:
        names = ", ".join(failed.step for failed in finish.failures) or ", ".join(finish.blocked)
        message = f"the flow's output could not be produced: {names} failed"
        return Finish(status, result=result, error={"code": "flow_failed", "failures": failures, "message": message})
    return Finish(status, result=result)


def _enqueue(context: RunContext, children: list[Run]) -> None:
    for child in children:
        context.enqueue(task_for_kind(child.kind), str(child.id))


def _fence(session: Session, context: RunContext) -> None:
    """Refuse to write for a stale tick, and stop one whose run was cancelled meanwhile."""
    if runs.check_fence(session, context.lease) == RunStatus.CANCELLED:
        raise RunCancelledError(f"flow run {context.run.id} was cancelled")
