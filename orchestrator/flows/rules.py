"""Trigger rules: may a step start, given the final states of its direct upstreams?

    evaluate(rule, upstream_states):
        no upstreams                      -> Ready
        every upstream excluded           -> Becomes(excluded)   (only reachable through branches not taken)
        drop the excluded ones; count S (completed), K (skipped), F (failed, timed_out, cancelled),
        UF (upstream_failed) over the rest, N of them, done = all four kinds
        apply the rule's row of Airflow's table -> Ready | Wait | Becomes(upstream_failed | skipped)

The table follows Airflow's `trigger_rule_dep.py` (see docs/flows.md for the full grid). Our extra
states are mapped once, here: `excluded` upstreams are left out of the count altogether, so a join
after a switch waits for the branch that was taken and neither waits for nor runs before the one that
was not; `timed_out` and `cancelled` count as failed. The caller passes only *final* states as
final: a step that failed or timed out but will be retried is still `pending` to its dependents.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.domain.enums import FlowStepState

StepState = FlowStepState  # the states live in the domain, where the step rows' store can see them


# States a step never leaves on its own (a retry or a rerun may still start a new attempt).
FINAL_STATES = frozenset(set(StepState) - {StepState.PENDING, StepState.RUNNING})
# What counts as F in the rule table: the step ran (or was meant to) and did not succeed.
FAILED_STATES = frozenset({StepState.FAILED, StepState.TIMED_OUT, StepState.CANCELLED})


class TriggerRule(StrEnum):
    ALL_SUCCESS = "all_success"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    NONE_FAILED = "none_failed"
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
    ALL_FAILED = "all_failed"
    ALWAYS = "always"


@dataclass(frozen=True)
class Ready:
    """The rule holds: the step may start (its `when` guard, if any, is asked next)."""


@dataclass(frozen=True)
class Wait:
    """The rule may still hold or fail: wait for more upstreams to finish."""


@dataclass(frozen=True)
class Becomes:
    """The rule can no longer hold: the step ends in `state` without running."""

    state: StepState


Verdict = Ready | Wait | Becomes


@dataclass(frozen=True)
class Counts:
    """Upstream outcomes with the excluded ones already left out."""

    total: int
    success: int
    skipped: int
    failed: int
    upstream_failed: int

    @property
    def done(self) -> bool:
        return self.success + self.skipped + self.failed + self.upstream_failed == self.total

    @property
    def failures(self) -> int:
        return self.failed + self.upstream_failed


def as_state(state: StepState | str) -> StepState:
    """The state as the enum (a flow's scheduler asks this of every step of every plan: a state that is
    already one is not converted again, which costs as much as the rest of the rule)."""
    return state if isinstance(state, StepState) else StepState(state)


def count(states: Iterable[StepState]) -> Counts:
    """Tally the non-excluded upstream states into the table's S, K, F and UF."""
    kept = [as_state(state) for state in states if state != StepState.EXCLUDED]
    return Counts(
        total=len(kept),
        success=sum(state == StepState.COMPLETED for state in kept),
        skipped=sum(state == StepState.SKIPPED for state in kept),
        failed=sum(state in FAILED_STATES for state in kept),
        upstream_failed=sum(state == StepState.UPSTREAM_FAILED for state in kept),
    )


def _all_success(c: Counts) -> Verdict:
    # Airflow decides as soon as one upstream fails or skips: it does not wait for the rest.
    if c.failures:
        return Becomes(StepState.UPSTREAM_FAILED)
    if c.skipped:
        return Becomes(StepState.SKIPPED)
    return Ready() if c.success == c.total else Wait()


def _all_failed(c: Counts) -> Verdict:
    if c.success or c.skipped:
        return Becomes(StepState.SKIPPED)
    return Ready() if c.failures == c.total else Wait()


def _all_done(c: Counts) -> Verdict:
    return Ready() if c.done else Wait()


def _one_success(c: Counts) -> Verdict:
    # Runs on the first success without waiting for the others (and never before one).
    if c.success:
        return Ready()
    if not c.done:
        return Wait()
    return Becomes(StepState.SKIPPED if c.skipped == c.total else StepState.UPSTREAM_FAILED)


def _one_failed(c: Counts) -> Verdict:
    if c.failures:
        return Ready()
    return Becomes(StepState.SKIPPED) if c.done else Wait()


def _none_failed(c: Counts) -> Verdict:
    # Never `skipped` (AIRFLOW-4453): all-skipped upstreams still let it run.
    if c.failures:
        return Becomes(StepState.UPSTREAM_FAILED)
    return Ready() if c.done else Wait()


def _none_failed_min_one_success(c: Counts) -> Verdict:
    if c.failures:
        return Becomes(StepState.UPSTREAM_FAILED)
    if c.skipped == c.total:
        return Becomes(StepState.SKIPPED)
    return Ready() if c.done else Wait()


def _always(c: Counts) -> Verdict:
    return Ready()


RULES: dict[TriggerRule, Callable[[Counts], Verdict]] = {
    TriggerRule.ALL_SUCCESS: _all_success,
    TriggerRule.ALL_DONE: _all_done,
    TriggerRule.ONE_SUCCESS: _one_success,
    TriggerRule.ONE_FAILED: _one_failed,
    TriggerRule.NONE_FAILED: _none_failed,
    TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS: _none_failed_min_one_success,
    TriggerRule.ALL_FAILED: _all_failed,
    TriggerRule.ALWAYS: _always,
}


def evaluate(rule: TriggerRule | str, upstream_states: Iterable[StepState | str]) -> Verdict:
    """Decide a step from its rule and its direct upstreams' states (pending/running = not done)."""
    states = [as_state(state) for state in upstream_states]
    if not states:
        return Ready()
    decide = RULES[rule if isinstance(rule, TriggerRule) else TriggerRule(rule)]
    if not any(state in FINAL_STATES for state in states):  # the common case in a long flow: nothing ended yet
        return decide(Counts(total=len(states), success=0, skipped=0, failed=0, upstream_failed=0))
    if all(state == StepState.EXCLUDED for state in states):
        return Becomes(StepState.EXCLUDED)
    return decide(count(states))
