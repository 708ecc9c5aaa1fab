"""Operations on a flow run, as pure decisions: fencing results, crash reconciliation, rerun, cancel.

    accept_result(record, attempt)      a result counts only for the attempt the record is running
    reconcile(step, record, child)      after a crash, from the journal and the child run's state:
        record not running              -> Leave (nothing that finished runs again), or CancelChild
                                           when an attempt that ended (timed out, cancelled) left
                                           its child going
        running, no child               -> Redispatch the same attempt (the crash came between the
                                           journal write and the child; the child key makes it once)
        running, child still going      -> KeepWaiting
        running, child completed        -> MarkDone(result)
        running, child failed/interrupted -> Retry while attempts remain, else MarkFailed
        running, child cancelled        -> MarkCancelled
    rerun_from(definition, records, step) the step and everything downstream back to pending;
                                          every other record is kept as it is (the same object)
    cancel(definition, records)         every unfinished step -> cancelled; the run ends cancelled
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.domain.enums import RunStatus
from orchestrator.flows.definition import FlowDefinition, Step
from orchestrator.flows.records import StepRecord, is_settled, record_of, will_retry
from orchestrator.flows.rules import StepState
from orchestrator.flows.scheduler import FailedStep, Finished, Mark

ACTIVE_CHILD = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING})
DONE_CHILD = frozenset({RunStatus.COMPLETED, RunStatus.COMPLETED_WITH_FAILURES})
FAILED_CHILD = frozenset({RunStatus.FAILED, RunStatus.INTERRUPTED})
ENDED_ATTEMPT = frozenset({StepState.TIMED_OUT, StepState.CANCELLED, StepState.FAILED})


def accept_result(record: StepRecord, attempt: int) -> bool:
    """Whether a result reported by attempt `attempt` may be recorded. A timed-out attempt's late
    result is refused: its record is no longer running, or already runs a later attempt."""
    return record.state == StepState.RUNNING and record.attempt == attempt


@dataclass(frozen=True)
class ChildRun:
    """What the journal knows of the child run of the record's current attempt."""

    status: RunStatus
    result: Any = None
    error: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Leave:
    """Nothing to do: the record is settled (or pending, for the scheduler to dispatch)."""


@dataclass(frozen=True)
class CancelChild:
    """The attempt already ended (timed out, cancelled) but its child is still going: cancel it."""


@dataclass(frozen=True)
class KeepWaiting:
    """The child is alive; its finishing wakes the run."""


@dataclass(frozen=True)
class Redispatch:
    """Start the child of this same attempt again (it was never created)."""

    attempt: int


@dataclass(frozen=True)
class MarkDone:
    result: Any


@dataclass(frozen=True)
class MarkFailed:
    error: Mapping[str, Any]


@dataclass(frozen=True)
class MarkCancelled:
    """The child was cancelled on its own (not the whole run): the step is cancelled."""


@dataclass(frozen=True)
class Retry:
    """Record this attempt as failed; attempt `attempt` follows after the backoff (scheduler.plan)."""

    attempt: int
    error: Mapping[str, Any]


Reconciliation = Leave | CancelChild | KeepWaiting | Redispatch | MarkDone | MarkFailed | MarkCancelled | Retry


def _child_error(child: ChildRun) -> dict[str, Any]:
    """The child's own error when it has one; otherwise say which way it ended."""
    if child.error:
        return dict(child.error)
    if child.status == RunStatus.INTERRUPTED:
        return {"code": "child_interrupted", "message": "the step's run was interrupted"}
    return {"code": "child_failed", "message": "the step's run failed"}


def reconcile(step: Step, record: StepRecord, child: ChildRun | None) -> Reconciliation:
    """Decide one step after a crash (see the module docstring for the table)."""
    if record.state != StepState.RUNNING:
        if record.state in ENDED_ATTEMPT and child is not None and child.status in ACTIVE_CHILD:
            return CancelChild()
        return Leave()
    if child is None:
        return Redispatch(record.attempt)
    if child.status in ACTIVE_CHILD:
        return KeepWaiting()
    if child.status in DONE_CHILD:
        return MarkDone(child.result)
    if child.status == RunStatus.CANCELLED:
        return MarkCancelled()
    error = _child_error(child)
    if will_retry(step, replace(record, state=StepState.FAILED, error=error)):
        return Retry(record.attempt + 1, error)
    return MarkFailed(error)


@dataclass(frozen=True)
class Rerun:
    records: dict[str, StepRecord]
    reset: tuple[str, ...]  # in topological order


def rerun_from(definition: FlowDefinition, records: Mapping[str, StepRecord], step_id: str) -> Rerun:
    """Reset `step_id` and its transitive dependents to pending with a fresh retry budget; attempt
    numbers keep growing (they fence late results). Every other record is returned untouched."""
    if step_id not in definition.by_id:
        raise KeyError(f"no step {step_id!r} in flow {definition.name!r}")
    reset_ids = {step_id} | definition.graph.descendants(step_id)
    new_records: dict[str, StepRecord] = dict(records)
    for reset_id in reset_ids:
        old = record_of(records, reset_id)
        new_records[reset_id] = StepRecord(attempt=old.attempt, first_attempt=old.attempt + 1)
    order = tuple(step for step in definition.graph.order if step in reset_ids)
    return Rerun(new_records, order)


@dataclass(frozen=True)
class Cancellation:
    mark: tuple[Mark, ...]  # the shell also cancels the child of every step that was running
    finish: Finished


def cancel(definition: FlowDefinition, records: Mapping[str, StepRecord]) -> Cancellation:
    """Cancel every step that has not settled (pending, running, waiting for a retry)."""
    marks = []
    for step_id in definition.graph.order:
        step, record = definition.step(step_id), record_of(records, step_id)
        if not is_settled(step, record):
            marks.append(Mark(step_id, StepState.CANCELLED, record.attempt, "the run was cancelled",
                              error={"code": "cancelled", "message": "the run was cancelled"}))
    cancelled = {mark.step for mark in marks}
    failures = tuple(FailedStep(step.id, record_of(records, step.id).state, record_of(records, step.id).error)
                     for step in definition.steps
                     if step.id not in cancelled and record_of(records, step.id).state in
                     {StepState.FAILED, StepState.TIMED_OUT, StepState.CANCELLED})
    return Cancellation(tuple(marks), Finished(RunStatus.CANCELLED, failures))
