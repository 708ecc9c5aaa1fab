"""What a flow run does next: one pure function of its definition, its step records and the time.

    plan(definition, records, now, guard_values) -> Plan
        running past timeout_seconds            -> time_out (and retry_at when attempts remain)
        walk the steps in topological order (ties: file order), over the records as this plan leaves them:
          failed/timed out, attempts left       -> backoff not over: retry_at; over: dispatch attempt + 1
          pending: trigger rule (rules.py) on the upstreams' states
            Becomes(state)                      -> mark (skipped, upstream_failed, excluded)
            Ready, a `when` or a switch without an answer in guard_values -> evaluate_guards
            Ready, guard false                  -> mark skipped;  guard could not be evaluated -> mark failed
            Ready switch                        -> mark completed with the first true case (else the
                                                   default); its other branches' steps -> mark excluded
            Ready step, under the flow's and its batch's max_concurrent -> dispatch attempt + 1
        every step settled                      -> finish: completed / completed_with_failures / failed
        nothing running, dispatched, retrying or asked, yet not settled -> finish: Stuck(reason)

The shell applies time_out, then mark, then dispatch, in one transaction, and runs `code` steps and
guards in the workflow sandbox (never here). A plan changes each step at most once; what a mark
unblocks downstream is decided in the same plan (the walk is topological), so one plan per tick is
enough. Guard answers are not remembered: a step held back by a concurrency limit is asked again
once there is room. Operations on a run (rerun, cancel, crash reconciliation) are in operations.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from orchestrator.flows.definition import (
    FlowDefinition,
    Step,
    StepKind,
    StepOutput,
    SwitchBody,
    TemplateOutput,
)
from orchestrator.flows.expressions import parse_template, render_template
from orchestrator.flows.records import (
    StepRecord,
    is_settled,
    record_of,
    retry_due,
    state_for_rules,
    will_retry,
)
from orchestrator.flows.rules import (
    FAILED_STATES,
    Becomes,
    Ready,
    StepState,
    Wait,
    evaluate,
)


@dataclass(frozen=True)
class Dispatch:
    """Start attempt `attempt` of the step: a child run (agent, flow) or a sandbox call (code).
    The shell keys the child by (run, step, attempt), so a repeated dispatch adopts the same child."""

    step: str
    attempt: int
    kind: StepKind


@dataclass(frozen=True)
class TimeOut:
    """Attempt `attempt` ran past its timeout: record `timed_out` and cancel its child run."""

    step: str
    attempt: int


@dataclass(frozen=True)
class RetryAt:
    """Attempt `attempt` may start at `at` (after the backoff); wake the run then."""

    step: str
    attempt: int
    at: datetime


@dataclass(frozen=True)
class Mark:
    """Set the step's state without running anything (skipped, excluded, upstream_failed, a switch's
    completion, a guard's failure, cancelled); `attempt` is the record's attempt after the mark."""

    step: str
    state: StepState
    attempt: int
    reason: str
    result: Any = None
    error: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class EvaluateGuards:
    """Evaluate these expressions in the sandbox (over the input and the steps) and pass the truth
    values back as guard_values[step]: the step's `when` first if it has one, then a switch's cases."""

    step: str
    expressions: tuple[str, ...]


@dataclass(frozen=True)
class GuardFailure:
    """An expression threw or did not run; the step fails with this message (not retried)."""

    message: str


GuardAnswer = tuple[bool, ...] | GuardFailure


@dataclass(frozen=True)
class FailedStep:
    step: str
    state: StepState
    error: Mapping[str, Any] | None


@dataclass(frozen=True)
class Finished:
    """Every step is settled. `failures`: failed, timed out or cancelled steps, with their errors;
    `blocked`: steps that did not run because of them (upstream_failed)."""

    status: str  # completed | completed_with_failures | failed | cancelled (a RunStatus value)
    failures: tuple[FailedStep, ...] = ()
    blocked: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stuck:
    """Nothing can move and the run is not complete: a bug or an impossible definition; fail the run."""

    reason: str
    waiting: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    dispatch: tuple[Dispatch, ...] = ()
    time_out: tuple[TimeOut, ...] = ()
    retry_at: tuple[RetryAt, ...] = ()
    mark: tuple[Mark, ...] = ()
    evaluate_guards: tuple[EvaluateGuards, ...] = ()
    finish: Finished | Stuck | None = None
    wake_at: datetime | None = None  # the earliest retry or timeout deadline: tick again then


class _Pass:
    """One plan's working state: the records as the decisions so far leave them, and the counts."""

    def __init__(self, definition: FlowDefinition, records: Mapping[str, StepRecord], now: datetime,
                 guard_values: Mapping[str, GuardAnswer]) -> None:
        self.definition = definition
        self.work = {step.id: record_of(records, step.id) for step in definition.steps}
        self.now = now
        self.guard_values = guard_values
        self.touched: set[str] = set()
        self.dispatch: list[Dispatch] = []
        self.time_out: list[TimeOut] = []
        self.retry_at: list[RetryAt] = []
        self.mark: list[Mark] = []
        self.evaluate: list[EvaluateGuards] = []
        self.running_total = 0
        self.running_in: dict[str, int] = {}
        for step in definition.steps:
            if self.work[step.id].state == StepState.RUNNING:
                self._count(step, +1)

    def _count(self, step: Step, delta: int) -> None:
        self.running_total += delta
        if step.batch is not None:
            self.running_in[step.batch] = self.running_in.get(step.batch, 0) + delta

    def has_room(self, step: Step) -> bool:
        """Under the flow's max_concurrent and the step's batch's (limits count running steps)."""
        limit = self.definition.max_concurrent
        if limit is not None and self.running_total >= limit:
            return False
        if step.batch is None:
            return True
        return self.running_in.get(step.batch, 0) < self.definition.batches.get(step.batch, 0)

    def set_mark(self, step: Step, state: StepState, reason: str, *, attempt: int | None = None,
                 result: Any = None, error: Mapping[str, Any] | None = None) -> None:
        record = self.work[step.id]
        attempt = record.attempt if attempt is None else attempt
        self.mark.append(Mark(step.id, state, attempt, reason, result, error))
        self.work[step.id] = replace(record, state=state, attempt=attempt, result=result, error=error,
                                     finished_at=self.now, started_at=record.started_at or self.now)
        self.touched.add(step.id)

    def start(self, step: Step, attempt: int) -> None:
        """Dispatch counts against the limits at once, so later steps in the same walk see the slot taken."""
        self.dispatch.append(Dispatch(step.id, attempt, step.kind))
        self.work[step.id] = replace(self.work[step.id], state=StepState.RUNNING, attempt=attempt,
                                     started_at=self.now, finished_at=None, result=None, error=None)
        self.touched.add(step.id)
        self._count(step, +1)


def _time_outs(state: _Pass) -> None:
    """Running attempts past their deadline end as timed_out; the retry (if any) comes after backoff."""
    for step in state.definition.steps:
        record = state.work[step.id]
        if record.state != StepState.RUNNING or step.timeout_seconds is None or record.started_at is None:
            continue
        if state.now < record.started_at + timedelta(seconds=step.timeout_seconds):
            continue
        state.time_out.append(TimeOut(step.id, record.attempt))
        state.work[step.id] = replace(record, state=StepState.TIMED_OUT, finished_at=state.now, error={
            "code": "step_timeout", "message": f"attempt {record.attempt} ran past {step.timeout_seconds:g} s"})
        state.touched.add(step.id)
        state._count(step, -1)


def _retry(state: _Pass, step: Step, record: StepRecord) -> None:
    """A step timed out in this very plan only gets its retry time: one change per step per plan."""
    due = retry_due(step, record)
    if due > state.now or step.id in state.touched:
        state.retry_at.append(RetryAt(step.id, record.attempt + 1, max(due, state.now)))
    elif state.has_room(step):
        state.start(step, record.attempt + 1)


def _guard_answer(state: _Pass, step: Step) -> GuardAnswer | None:
    """The answer for this step's expressions, or None after asking for them."""
    expressions = ((step.when,) if step.when is not None else ()) + (
        tuple(case.when for case in step.body.cases) if isinstance(step.body, SwitchBody) else ())
    if not expressions:
        return ()
    answer = state.guard_values.get(step.id)
    if isinstance(answer, GuardFailure) or (answer is not None and len(answer) == len(expressions)):
        return answer
    state.evaluate.append(EvaluateGuards(step.id, expressions))
    return None


def _resolve_switch(state: _Pass, step: Step, body: SwitchBody, cases: tuple[bool, ...]) -> None:
    """First true case wins, else the default; pending steps of the other branches are excluded."""
    chosen = next((number for number, value in enumerate(cases) if value), len(body.cases))
    taken = body.branches[chosen]
    label = f"case {chosen + 1}" if chosen < len(body.cases) else "the default"
    state.set_mark(step, StepState.COMPLETED, f"took {label}", attempt=state.work[step.id].attempt + 1,
                   result={"case": chosen if chosen < len(body.cases) else None, "branch": list(taken)})
    for target in body.targets:
        if target not in taken and state.work[target].state == StepState.PENDING:
            state.set_mark(state.definition.step(target), StepState.EXCLUDED,
                           f"switch {step.id!r} took {label}, which does not include it")


def _ready(state: _Pass, step: Step) -> None:
    """The rule holds: ask the guards, then skip, fail, resolve the switch or dispatch."""
    is_switch = isinstance(step.body, SwitchBody)
    if not is_switch and not state.has_room(step):
        return  # asked again once there is room (see the module docstring)
    answer = _guard_answer(state, step)
    if answer is None:
        return
    if isinstance(answer, GuardFailure):
        state.set_mark(step, StepState.FAILED, "a guard could not be evaluated",
                       attempt=state.work[step.id].attempt + 1,
                       error={"code": "guard_failed", "message": answer.message, "retryable": False})
        return
    if step.when is not None:
        guard, answer = answer[0], answer[1:]
        if not guard:
            state.set_mark(step, StepState.SKIPPED, "its `when` guard was false")
            return
    if isinstance(step.body, SwitchBody):
        _resolve_switch(state, step, step.body, answer)
    else:
        state.start(step, state.work[step.id].attempt + 1)


def _decide(state: _Pass, step: Step) -> None:
    """One step of the walk; its upstreams were decided earlier in the same walk (topological order)."""
    record = state.work[step.id]
    if will_retry(step, record):
        _retry(state, step, record)
        return
    if record.state != StepState.PENDING or step.id in state.touched:
        return
    upstream = state.definition.graph.upstream[step.id]
    verdict = evaluate(step.trigger_rule, [
        state_for_rules(state.definition.step(dep), state.work[dep]) for dep in upstream])
    if isinstance(verdict, Becomes):
        state.set_mark(step, verdict.state, f"trigger rule {step.trigger_rule.value} can no longer hold"
                       if verdict.state != StepState.EXCLUDED else "every upstream step was excluded")
    elif isinstance(verdict, Ready):
        _ready(state, step)
    else:
        assert isinstance(verdict, Wait)


def _wake_at(state: _Pass) -> datetime | None:
    """Nothing else wakes a run for a backoff or a timeout: no child finishes then."""
    times = [retry.at for retry in state.retry_at]
    for step in state.definition.steps:
        record = state.work[step.id]
        if record.state == StepState.RUNNING and step.timeout_seconds is not None and record.started_at:
            times.append(record.started_at + timedelta(seconds=step.timeout_seconds))
    return min(times) if times else None


def plan(definition: FlowDefinition, records: Mapping[str, StepRecord], now: datetime,
         guard_values: Mapping[str, GuardAnswer] | None = None) -> Plan:
    """The next decisions for a flow run (see the module docstring for the order they are made in)."""
    state = _Pass(definition, records, now, guard_values or {})
    _time_outs(state)
    for step_id in definition.graph.order:
        _decide(state, definition.step(step_id))
    return Plan(dispatch=tuple(state.dispatch), time_out=tuple(state.time_out), retry_at=tuple(state.retry_at),
                mark=tuple(state.mark), evaluate_guards=tuple(state.evaluate),
                finish=_finish(state), wake_at=_wake_at(state))


def _finish(state: _Pass) -> Finished | Stuck | None:
    """Settled -> the outcome; not settled and nothing can move -> Stuck rather than an open run forever."""
    definition, work = state.definition, state.work
    unsettled = [step.id for step in definition.steps if not is_settled(step, work[step.id])]
    if not unsettled:
        return outcome(definition, work)
    moving = state.running_total or state.dispatch or state.retry_at or state.evaluate
    if moving:
        return None
    return Stuck(reason=f"nothing is running or ready, yet {len(unsettled)} step(s) have not finished: "
                        f"{', '.join(unsettled[:10])}" + (" …" if len(unsettled) > 10 else ""),
                 waiting=tuple(unsettled))


def _output_available(definition: FlowDefinition, records: Mapping[str, StepRecord]) -> bool:
    """Whether the run's declared output can be produced despite failures elsewhere."""
    output = definition.output
    if isinstance(output, StepOutput):
        return record_of(records, output.step).state == StepState.COMPLETED
    if isinstance(output, TemplateOutput):
        placeholders, _ = parse_template(output.template)
        return all(record_of(records, placeholder.step).state not in FAILED_STATES | {StepState.UPSTREAM_FAILED}
                   for _, placeholder in placeholders if placeholder.step is not None)
    sinks = [step.id for step in definition.steps if not definition.graph.downstream[step.id]]
    return any(record_of(records, sink).state == StepState.COMPLETED for sink in sinks)


def outcome(definition: FlowDefinition, records: Mapping[str, StepRecord]) -> Finished:
    """The honest ending of a settled run: which steps failed and whether the output still exists."""
    failures = tuple(FailedStep(step.id, record_of(records, step.id).state, record_of(records, step.id).error)
                     for step in definition.steps if record_of(records, step.id).state in FAILED_STATES)
    blocked = tuple(step.id for step in definition.steps
                    if record_of(records, step.id).state == StepState.UPSTREAM_FAILED)
    if not failures and not blocked:
        return Finished("completed")
    status = "completed_with_failures" if _output_available(definition, records) else "failed"
    return Finished(status, failures, blocked)


def render_output(definition: FlowDefinition, records: Mapping[str, StepRecord], flow_input: Any) -> Any:
    """The run's result: the output step's result, the rendered template, or the sinks' results."""
    output = definition.output
    if isinstance(output, StepOutput):
        return record_of(records, output.step).result
    views = {step.id: {"state": record_of(records, step.id).state.value, "result": record_of(records, step.id).result,
                       "error": record_of(records, step.id).error, "attempt": record_of(records, step.id).attempt}
             for step in definition.steps}
    if isinstance(output, TemplateOutput):
        return render_template(output.template, flow_input, views)
    return {step.id: views[step.id]["result"] for step in definition.steps
            if not definition.graph.downstream[step.id] and views[step.id]["state"] == StepState.COMPLETED}
