"""A flow run's step records as the scheduler sees them, and the retry arithmetic over them.

    StepRecord(state, attempt, first_attempt, started_at, finished_at, result, error)
    step_views(definition, records) -> what templates, guards and code see as `steps.<id>`

`attempt` is the number of the attempt now running or last ended (0: never started). Attempt
numbers only ever grow within a run, even across a rerun, because they fence results: a late result
is accepted only while its attempt is the record's running one. `first_attempt` is where the current
generation began (a rerun moves it past the old attempts), so the retry budget counts
`attempt - first_attempt + 1` and a rerun gets a full budget without reusing a number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator.flows.definition import FlowDefinition, Step
from orchestrator.flows.rules import FINAL_STATES, StepState
from orchestrator.store.models import FlowStep

RETRYABLE_STATES = frozenset({StepState.FAILED, StepState.TIMED_OUT})


@dataclass(frozen=True)
class StepRecord:
    state: StepState = StepState.PENDING
    attempt: int = 0
    first_attempt: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Any = None
    error: Mapping[str, Any] | None = None

    @property
    def attempts_used(self) -> int:
        """Attempts made in this generation (0 before the first one of it starts)."""
        return max(0, self.attempt - self.first_attempt + 1)


NEVER_RUN = StepRecord()


def record_of(records: Mapping[str, StepRecord], step_id: str) -> StepRecord:
    """A step with no record yet has never run: it is pending."""
    return records.get(step_id, NEVER_RUN)


def will_retry(step: Step, record: StepRecord) -> bool:
    """A failed or timed-out attempt is followed by another while the budget lasts, unless the
    failure says it is not worth retrying (`error.retryable` is false: a refused prompt, a bad guard)."""
    if record.state not in RETRYABLE_STATES:
        return False
    if record.error is not None and record.error.get("retryable") is False:
        return False
    return record.attempts_used < step.retries.max_attempts


def retry_due(step: Step, record: StepRecord) -> datetime:
    """When the next attempt may start: the backoff counts from when the last one ended."""
    ended = record.finished_at or record.started_at
    assert ended is not None, "a failed attempt has an end (or at least a start) time"
    return ended + timedelta(seconds=step.retries.delay(record.attempts_used))


def is_settled(step: Step, record: StepRecord) -> bool:
    """Final and not about to be retried: its dependents may count it."""
    return record.state in FINAL_STATES and not will_retry(step, record)


def state_for_rules(step: Step, record: StepRecord) -> StepState:
    """What a step's dependents see: a step that will be retried is still pending to them."""
    return StepState.PENDING if will_retry(step, record) else record.state


def record_of_row(row: FlowStep) -> StepRecord:
    return StepRecord(state=StepState(row.state), attempt=row.attempt, first_attempt=row.first_attempt,
                      started_at=row.started_at, finished_at=row.finished_at, result=row.result, error=row.error)


def records_of(rows: dict[str, FlowStep]) -> dict[str, StepRecord]:
    """The rows as the pure scheduler sees them."""
    return {step_id: record_of_row(row) for step_id, row in rows.items()}


def step_views(definition: FlowDefinition, records: Mapping[str, StepRecord]) -> dict[str, dict[str, Any]]:
    """What templates, guards and code see as `steps.<id>`."""
    views = {}
    for step in definition.steps:
        record = records.get(step.id, StepRecord())
        views[step.id] = {"state": record.state.value, "result": record.result, "error": record.error,
                          "attempt": record.attempt}
    return views
