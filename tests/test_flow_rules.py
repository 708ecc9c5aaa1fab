"""Trigger rules over every combination of upstream outcomes, against an independent oracle.

The oracle below is a transcription of Airflow's table (reference/peer-specs.md §5.1) written as
"which outcomes are present" sets rather than counts, plus our mapping: excluded upstreams are
left out, timed_out and cancelled count as failed, pending and running are "not done".
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from orchestrator.flows.rules import (
    Becomes,
    Ready,
    StepState,
    TriggerRule,
    Wait,
    evaluate,
)

S = StepState
EVERY_STATE = list(StepState)
NOT_DONE = {"pending", "running"}
FAILED_KINDS = {"failed", "timed_out", "cancelled"}


def oracle(rule: str, states: tuple[str, ...]) -> str:
    """'ready', 'wait', or the state the step becomes; one branch per row of the table."""
    if not states:
        return "ready"
    rest = [state for state in states if state != "excluded"]
    if not rest:
        return "excluded"
    kinds = {"S" if s == "completed" else "K" if s == "skipped" else "F" if s in FAILED_KINDS
             else "UF" if s == "upstream_failed" else "N" for s in rest}
    finished = "N" not in kinds
    failed_any = bool(kinds & {"F", "UF"})
    if rule == "always":
        return "ready"
    if rule == "all_done":
        return "ready" if finished else "wait"
    if rule == "all_success":
        return "upstream_failed" if failed_any else "skipped" if "K" in kinds else \
            "ready" if kinds == {"S"} else "wait"
    if rule == "all_failed":
        return "skipped" if kinds & {"S", "K"} else "ready" if kinds <= {"F", "UF"} else "wait"
    if rule == "one_success":
        if "S" in kinds:
            return "ready"
        if not finished:
            return "wait"
        return "skipped" if kinds == {"K"} else "upstream_failed"
    if rule == "one_failed":
        return "ready" if failed_any else "skipped" if finished else "wait"
    if rule == "none_failed":
        return "upstream_failed" if failed_any else "ready" if finished else "wait"
    if rule == "none_failed_min_one_success":
        if failed_any:
            return "upstream_failed"
        if kinds == {"K"}:
            return "skipped"
        return "ready" if finished else "wait"
    raise AssertionError(f"the oracle does not know {rule}")


def shown(verdict: Ready | Wait | Becomes) -> str:
    if isinstance(verdict, Ready):
        return "ready"
    if isinstance(verdict, Wait):
        return "wait"
    return verdict.state.value


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_every_rule_agrees_with_the_table_for_every_combination_of_one_to_three_upstreams(rule: TriggerRule) -> None:
    checked, mismatches = 0, []
    for size in (1, 2, 3):
        for states in itertools.product(EVERY_STATE, repeat=size):
            expected = oracle(rule.value, tuple(state.value for state in states))
            actual = shown(evaluate(rule, states))
            checked += 1
            if actual != expected:
                mismatches.append((states, expected, actual))
    assert checked == 9 + 81 + 729
    assert mismatches == []


def test_the_oracle_covers_every_rule_and_every_state_value() -> None:
    assert {state.value for state in StepState} == {
        "pending", "running", "completed", "failed", "timed_out", "skipped", "excluded", "upstream_failed", "cancelled"}
    for rule in TriggerRule:
        oracle(rule.value, ("completed",))


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_a_step_without_upstreams_is_ready_whatever_its_rule(rule: TriggerRule) -> None:
    assert evaluate(rule, []) == Ready()


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_a_step_whose_every_upstream_was_excluded_is_excluded_too(rule: TriggerRule) -> None:
    assert evaluate(rule, [S.EXCLUDED]) == Becomes(S.EXCLUDED)
    assert evaluate(rule, [S.EXCLUDED, S.EXCLUDED]) == Becomes(S.EXCLUDED)


# Hand-written rows for the named cases: (rule, upstream states, expected).
NAMED_ROWS = [
    # A join after a switch: waits for the branch taken, not for the one excluded, and never runs before it.
    (TriggerRule.ALL_SUCCESS, [S.EXCLUDED, S.PENDING], "wait"),
    (TriggerRule.ALL_SUCCESS, [S.EXCLUDED, S.RUNNING], "wait"),
    (TriggerRule.ALL_SUCCESS, [S.EXCLUDED, S.COMPLETED], "ready"),
    (TriggerRule.ALL_SUCCESS, [S.COMPLETED, S.EXCLUDED, S.EXCLUDED], "ready"),
    (TriggerRule.ALL_SUCCESS, [S.EXCLUDED, S.FAILED], "upstream_failed"),
    (TriggerRule.ONE_SUCCESS, [S.EXCLUDED, S.PENDING], "wait"),
    (TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, [S.EXCLUDED, S.COMPLETED], "ready"),
    (TriggerRule.ALL_DONE, [S.EXCLUDED, S.RUNNING], "wait"),
    # A skip cascades through all_success: a skipped parent skips the child, whose child skips too.
    (TriggerRule.ALL_SUCCESS, [S.SKIPPED], "skipped"),
    (TriggerRule.ALL_SUCCESS, [S.COMPLETED, S.SKIPPED], "skipped"),
    (TriggerRule.ALL_SUCCESS, [S.SKIPPED, S.PENDING], "skipped"),
    # ...which is why joins use none_failed_min_one_success: it runs after a skipped branch.
    (TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, [S.SKIPPED, S.COMPLETED], "ready"),
    (TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, [S.SKIPPED, S.SKIPPED], "skipped"),
    # one_success runs on the first success without waiting for the rest...
    (TriggerRule.ONE_SUCCESS, [S.COMPLETED, S.PENDING, S.RUNNING], "ready"),
    (TriggerRule.ONE_SUCCESS, [S.RUNNING, S.FAILED, S.COMPLETED], "ready"),
    # ...but is not decided while an upstream has not run (apache/airflow#42581).
    (TriggerRule.ONE_SUCCESS, [S.SKIPPED, S.PENDING], "wait"),
    (TriggerRule.ONE_SUCCESS, [S.FAILED, S.PENDING], "wait"),
    (TriggerRule.ONE_SUCCESS, [S.SKIPPED, S.SKIPPED], "skipped"),
    (TriggerRule.ONE_SUCCESS, [S.SKIPPED, S.FAILED], "upstream_failed"),
    # timed_out (attempts spent) and cancelled count as failed.
    (TriggerRule.ALL_SUCCESS, [S.TIMED_OUT], "upstream_failed"),
    (TriggerRule.ALL_SUCCESS, [S.CANCELLED, S.PENDING], "upstream_failed"),
    (TriggerRule.ALL_FAILED, [S.TIMED_OUT, S.CANCELLED, S.UPSTREAM_FAILED], "ready"),
    (TriggerRule.ONE_FAILED, [S.TIMED_OUT, S.PENDING], "ready"),
    (TriggerRule.ONE_FAILED, [S.COMPLETED, S.SKIPPED], "skipped"),
    # none_failed is never skipped (AIRFLOW-4453), even when every upstream was.
    (TriggerRule.NONE_FAILED, [S.SKIPPED, S.SKIPPED], "ready"),
    (TriggerRule.NONE_FAILED, [S.SKIPPED, S.UPSTREAM_FAILED], "upstream_failed"),
    (TriggerRule.ALL_FAILED, [S.FAILED, S.COMPLETED], "skipped"),
    (TriggerRule.ALL_DONE, [S.FAILED, S.SKIPPED, S.CANCELLED], "ready"),
    (TriggerRule.ALWAYS, [S.PENDING, S.RUNNING], "ready"),
]


@pytest.mark.parametrize(("rule", "states", "expected"), NAMED_ROWS)
def test_named_cases(rule: TriggerRule, states: list[StepState], expected: str) -> None:
    assert shown(evaluate(rule, states)) == expected


def test_rules_and_states_accept_their_string_values_as_stored() -> None:
    assert evaluate("one_success", ["completed", "pending"]) == Ready()
    with pytest.raises(ValueError):
        evaluate("one_sucess", ["completed"])


def test_the_table_in_the_docs_is_what_evaluate_does() -> None:
    text = (Path(__file__).parent.parent / "docs" / "flows.md").read_text()
    header = "| rule \\ upstream | " + " | ".join(f"`{state.value}`" for state in StepState) + " |"
    assert header in text, "docs/flows.md has the one-upstream table with the states in this order"
    rows = text.split(header, 1)[1].splitlines()[2:2 + len(TriggerRule)]
    for rule, row in zip(TriggerRule, rows):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[0] == f"`{rule.value}`"
        assert cells[1:] == [shown(evaluate(rule, [state])).replace("ready", "run") for state in StepState], rule
