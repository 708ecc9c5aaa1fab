"""The flow scheduler, operations and schedules as pure functions, table-driven; no services.

`apply` below is the smallest possible shell: it writes each decision into the records the way the
run kind will write them into the journal, so a loop of plan -> apply -> complete some steps is a
whole flow run without a database.
"""

from __future__ import annotations

import json
import random
import textwrap
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from orchestrator.domain.enums import RunStatus
from orchestrator.flows import cron
from orchestrator.flows.definition import CodeBody, FlowDefinition, Step, load
from orchestrator.flows.operations import (
    CancelChild,
    ChildRun,
    KeepWaiting,
    Leave,
    MarkCancelled,
    MarkDone,
    MarkFailed,
    Redispatch,
    Retry,
    accept_result,
    cancel,
    reconcile,
    rerun_from,
)
from orchestrator.flows.records import StepRecord
from orchestrator.flows.rules import StepState
from orchestrator.flows.scheduler import (
    Dispatch,
    EvaluateGuards,
    Finished,
    GuardFailure,
    Mark,
    Plan,
    RetryAt,
    Stuck,
    TimeOut,
    outcome,
    plan,
    render_output,
)

S = StepState
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
UTC = timezone.utc


def flow(text: str) -> FlowDefinition:
    return load(textwrap.dedent(text).lstrip("\n"))


def code(step_id: str, *deps: str, **extra: Any) -> str:
    """One code step as a YAML flow mapping."""
    fields = {"id": step_id, "kind": "code", "code": "'1'", **({"deps": list(deps)} if deps else {}), **extra}
    return "  - " + json.dumps(fields)  # JSON is a YAML flow mapping


def steps_flow(*lines: str, header: str = "") -> FlowDefinition:
    return load(f"name: t\n{header}steps:\n" + "\n".join(lines) + "\n")


def done(attempt: int = 1, result: Any = None, at: datetime = T0) -> StepRecord:
    return StepRecord(S.COMPLETED, attempt, 1, at, at, result)


def running(attempt: int = 1, since: datetime = T0) -> StepRecord:
    return StepRecord(S.RUNNING, attempt, 1, since)


def failed(attempt: int = 1, at: datetime = T0, error: dict[str, Any] | None = None,
           state: StepState = S.FAILED) -> StepRecord:
    return StepRecord(state, attempt, 1, at, at, None, error or {"code": "boom", "message": "it broke"})


def apply(records: dict[str, StepRecord], decided: Plan, now: datetime) -> dict[str, StepRecord]:
    """The test's shell: time_out, then mark, then dispatch, as the run kind writes them."""
    records = dict(records)
    for timeout in decided.time_out:
        records[timeout.step] = replace(records[timeout.step], state=S.TIMED_OUT, finished_at=now,
                                        error={"code": "step_timeout"})
    for mark in decided.mark:
        old = records.get(mark.step, StepRecord())
        records[mark.step] = replace(old, state=mark.state, attempt=mark.attempt, result=mark.result,
                                     error=mark.error, finished_at=now)
    for dispatch in decided.dispatch:
        old = records.get(dispatch.step, StepRecord())
        records[dispatch.step] = replace(old, state=S.RUNNING, attempt=dispatch.attempt, started_at=now,
                                         finished_at=None, result=None, error=None)
    return records


def marks(decided: Plan) -> dict[str, StepState]:
    return {mark.step: mark.state for mark in decided.mark}


# --- ready steps, order, gating --------------------------------------------------------------------


def test_ready_steps_are_dispatched_in_topological_order_ties_by_file_order() -> None:
    definition = steps_flow(code("late", "b"), code("b"), code("a"), code("c", "a"))
    decided = plan(definition, {}, T0)
    assert decided.dispatch == (Dispatch("b", 1, definition.step("b").kind),
                                Dispatch("a", 1, definition.step("a").kind))
    assert definition.graph.order == ("b", "late", "a", "c")
    after = plan(definition, {"a": done(), "b": done()}, T0)
    assert [dispatch.step for dispatch in after.dispatch] == ["late", "c"]


def test_the_same_inputs_always_give_the_same_plan() -> None:
    definition = steps_flow(*(code(f"s{i}") for i in range(12)), header="max_concurrent: 5\n")
    assert plan(definition, {}, T0) == plan(definition, {}, T0)
    assert [dispatch.step for dispatch in plan(definition, {}, T0).dispatch] == ["s0", "s1", "s2", "s3", "s4"]


GATING = [
    # (running now, expected dispatches): flow max 4; batch io max 2 (io1..io4), cpu max 1 (cpu1, cpu2); free1, free2
    ([], ["io1", "io2", "cpu1", "free1"]),
    (["io1"], ["io2", "cpu1", "free1"]),
    (["io1", "io2"], ["cpu1", "free1"]),
    (["io1", "io2", "cpu1"], ["free1"]),
    (["io1", "io2", "cpu1", "free1"], []),
    (["cpu1", "free1", "free2"], ["io1"]),
]


@pytest.mark.parametrize(("busy", "expected"), GATING)
def test_batch_and_flow_max_concurrent_gate_dispatches(busy: list[str], expected: list[str]) -> None:
    definition = steps_flow(
        *(code(f"io{i}", batch="io") for i in range(1, 5)), *(code(f"cpu{i}", batch="cpu") for i in (1, 2)),
        code("free1"), code("free2"),
        header="max_concurrent: 4\nbatches: {io: {max_concurrent: 2}, cpu: {max_concurrent: 1}}\n")
    decided = plan(definition, {step: running() for step in busy}, T0)
    assert [dispatch.step for dispatch in decided.dispatch] == expected


# --- guards, switches, propagation -----------------------------------------------------------------


def test_a_guard_is_asked_then_false_skips_the_step_and_the_skip_cascades_through_all_success() -> None:
    definition = steps_flow(code("a", when="input.go"), code("b", "a"), code("c", "b"),
                            code("d", "b", trigger_rule="all_done"))
    asked = plan(definition, {}, T0)
    assert (asked.evaluate_guards == (EvaluateGuards("a", ("input.go",)),) and asked.dispatch == ()
            and asked.finish is None)
    skipped = plan(definition, {}, T0, {"a": (False,)})
    assert marks(skipped) == {"a": S.SKIPPED, "b": S.SKIPPED, "c": S.SKIPPED}
    assert [dispatch.step for dispatch in skipped.dispatch] == ["d"]
    assert [dispatch.step for dispatch in plan(definition, {}, T0, {"a": (True,)}).dispatch] == ["a"]


def test_a_guard_that_cannot_be_evaluated_fails_the_step_without_a_retry() -> None:
    definition = steps_flow(code("a", when="input.x.y", retries={"max_attempts": 3}), code("b", "a"))
    decided = plan(definition, {}, T0, {"a": GuardFailure("TypeError: input.x is undefined")})
    assert marks(decided) == {"a": S.FAILED, "b": S.UPSTREAM_FAILED}
    assert decided.mark[0].error == {"code": "guard_failed", "message": "TypeError: input.x is undefined",
                                     "retryable": False}
    assert decided.finish == outcome(definition, apply({}, decided, T0))
    assert decided.finish.status == "failed"


def test_a_guard_is_not_asked_while_a_concurrency_limit_holds_the_step_back() -> None:
    definition = steps_flow(code("a"), code("b", when="true"), header="max_concurrent: 1\n")
    assert plan(definition, {"a": running()}, T0).evaluate_guards == ()
    assert plan(definition, {"a": done()}, T0).evaluate_guards == (EvaluateGuards("b", ("true",)),)


SWITCH = """
    name: t
    steps:
      - {id: start, kind: code, code: "1"}
      - id: route
        kind: switch
        deps: [start]
        cases:
          - {when: "steps.start.result > 10", then: [big]}
          - {when: "steps.start.result > 5", then: [medium, shared]}
        default: [small, shared]
      - {id: big, kind: code, code: "1"}
      - {id: medium, kind: code, code: "1"}
      - {id: small, kind: code, code: "1"}
      - {id: shared, kind: code, code: "1"}
      - {id: after_big, kind: code, code: "1", deps: [big]}
      - {id: join, kind: code, code: "1", deps: [big, medium, small]}
      - {id: mixed, kind: code, code: "1", deps: [after_big, start]}
"""


@pytest.mark.parametrize(("answer", "case", "taken", "excluded", "also_ready"), [
    ((True, True), 0, ["big"], {"medium", "small", "shared"}, []),
    # `mixed` waits for after_big (excluded with big) and start (completed): the excluded side is left out.
    ((False, True), 1, ["medium", "shared"], {"big", "small", "after_big"}, ["mixed"]),
    ((False, False), None, ["small", "shared"], {"big", "medium", "after_big"}, ["mixed"]),
])
def test_a_switch_takes_the_first_true_case_and_excludes_the_other_branches(
        answer: tuple[bool, ...], case: int | None, taken: list[str], excluded: set[str],
        also_ready: list[str]) -> None:
    definition = flow(SWITCH)
    records = {"start": done(result=7)}
    asked = plan(definition, records, T0)
    assert asked.evaluate_guards == (EvaluateGuards("route", ("steps.start.result > 10", "steps.start.result > 5")),)
    decided = plan(definition, records, T0, {"route": answer})
    assert decided.mark[0] == Mark("route", S.COMPLETED, 1, decided.mark[0].reason, {"case": case, "branch": taken})
    assert {step for step, state in marks(decided).items() if state == S.EXCLUDED} == excluded
    assert [dispatch.step for dispatch in decided.dispatch] == taken + also_ready


def test_a_join_after_a_switch_waits_for_the_taken_branch_and_not_for_the_excluded_ones() -> None:
    definition = flow(SWITCH)
    records = apply({"start": done(result=7)},
                    plan(definition, {"start": done(result=7)}, T0, {"route": (False, True)}), T0)
    assert "join" not in records and records["medium"].state == S.RUNNING
    waiting = plan(definition, records, T0)
    assert waiting.dispatch == () and "join" not in marks(waiting)
    records["medium"] = done()
    after = plan(definition, records, T0)
    assert [dispatch.step for dispatch in after.dispatch] == ["join"]


def test_exclusion_cascades_to_steps_only_reachable_through_excluded_ones() -> None:
    definition = flow(SWITCH)
    decided = plan(definition, {"start": done(result=20)}, T0, {"route": (True, False)})
    records = apply({"start": done(result=20)}, decided, T0)
    records["big"] = done()
    later = plan(definition, records, T0)
    assert [dispatch.step for dispatch in later.dispatch] == ["after_big", "join"]
    none_taken = steps_flow(code("start"),
                            '  - {id: route, kind: switch, deps: [start], cases: [{when: "false", then: [x]}]}',
                            code("x"), code("after_x", "x"), code("join", "x", "after_x"),
                            code("mixed", "after_x", "start"))
    nothing = plan(none_taken, {"start": done(result=1)}, T0, {"route": (False,)})
    assert nothing.mark[0].result == {"case": None, "branch": []}
    assert marks(nothing) == {"route": S.COMPLETED, "x": S.EXCLUDED, "after_x": S.EXCLUDED, "join": S.EXCLUDED}
    assert [dispatch.step for dispatch in nothing.dispatch] == ["mixed"]


def test_a_switch_with_its_own_guard_asks_the_guard_first() -> None:
    definition = flow(SWITCH.replace("        deps: [start]\n", "        deps: [start]\n        when: input.route\n"))
    asked = plan(definition, {"start": done(result=7)}, T0)
    assert asked.evaluate_guards[0].expressions == ("input.route", "steps.start.result > 10", "steps.start.result > 5")
    skipped = plan(definition, {"start": done(result=7)}, T0, {"route": (False, True, True)})
    assert marks(skipped)["route"] == S.SKIPPED and marks(skipped)["big"] == S.SKIPPED


def test_a_failure_propagates_as_upstream_failed_and_all_done_still_runs() -> None:
    definition = steps_flow(code("a"), code("b", "a"), code("c", "b"), code("cleanup", "c", trigger_rule="all_done"),
                            code("alert", "a", trigger_rule="one_failed"))
    decided = plan(definition, {"a": failed()}, T0)
    assert marks(decided) == {"b": S.UPSTREAM_FAILED, "c": S.UPSTREAM_FAILED}
    assert [dispatch.step for dispatch in decided.dispatch] == ["cleanup", "alert"]


# --- timeouts, retries, fencing ----------------------------------------------------------------------


RETRYING = [code("slow", timeout_seconds=60, retries={"max_attempts": 3, "backoff_seconds": 10, "backoff_factor": 3,
                                                     "max_backoff_seconds": 50}), code("next", "slow")]


def test_a_step_past_its_timeout_times_out_and_is_retried_after_the_backoff() -> None:
    definition = steps_flow(*RETRYING)
    assert plan(definition, {"slow": running(1)}, T0 + timedelta(seconds=59)).time_out == ()
    now = T0 + timedelta(seconds=60)
    decided = plan(definition, {"slow": running(1)}, now)
    assert decided.time_out == (TimeOut("slow", 1),)
    assert decided.retry_at == (RetryAt("slow", 2, now + timedelta(seconds=10)),)
    assert decided.dispatch == () and marks(decided) == {} and decided.wake_at == now + timedelta(seconds=10)
    records = apply({"slow": running(1)}, decided, now)
    assert plan(definition, records, now + timedelta(seconds=9)).dispatch == ()
    retried = plan(definition, records, now + timedelta(seconds=10))
    assert [(dispatch.step, dispatch.attempt) for dispatch in retried.dispatch] == [("slow", 2)]


@pytest.mark.parametrize(("attempt", "delay"), [(1, 10), (2, 30)])
def test_the_backoff_grows_by_the_factor_and_is_capped(attempt: int, delay: int) -> None:
    definition = steps_flow(*RETRYING)
    decided = plan(definition, {"slow": failed(attempt, state=S.TIMED_OUT)}, T0)
    assert decided.retry_at == (RetryAt("slow", attempt + 1, T0 + timedelta(seconds=delay)),)
    capped = steps_flow(*RETRYING).step("slow").retries
    assert capped.delay(3) == 50


def test_when_the_attempts_are_spent_a_timeout_counts_as_failed_downstream() -> None:
    definition = steps_flow(*RETRYING)
    decided = plan(definition, {"slow": running(3)}, T0 + timedelta(seconds=61))
    assert decided.time_out == (TimeOut("slow", 3),) and decided.retry_at == ()
    assert marks(decided) == {"next": S.UPSTREAM_FAILED}
    assert isinstance(decided.finish, Finished) and decided.finish.status == "failed"
    assert [failure.step for failure in decided.finish.failures] == ["slow"]


def test_a_failure_marked_not_retryable_is_not_retried() -> None:
    definition = steps_flow(*RETRYING)
    decided = plan(definition, {"slow": failed(1, error={"code": "refused", "retryable": False})}, T0)
    assert decided.retry_at == () and marks(decided) == {"next": S.UPSTREAM_FAILED}


def test_a_late_result_of_a_timed_out_attempt_is_fenced_out() -> None:
    assert accept_result(running(2), 2)
    assert not accept_result(running(2), 1)  # attempt 1 timed out; attempt 2 runs now
    assert not accept_result(failed(2, state=S.TIMED_OUT), 2)
    assert not accept_result(done(2), 2)  # a duplicate delivery of a result already recorded


def test_the_wake_up_time_is_the_earliest_timeout_or_retry() -> None:
    definition = steps_flow(code("a", timeout_seconds=100),
                            code("b", retries={"max_attempts": 2, "backoff_seconds": 30}))
    decided = plan(definition, {"a": running(1), "b": failed(1)}, T0 + timedelta(seconds=5))
    assert decided.wake_at == T0 + timedelta(seconds=30)
    assert plan(definition, {"a": running(1, T0 - timedelta(seconds=90))}, T0).wake_at == T0 + timedelta(seconds=10)


# --- completion, outcome, stuck ---------------------------------------------------------------------------


def test_a_run_whose_steps_all_completed_is_completed() -> None:
    definition = steps_flow(code("a"), code("b", "a"))
    assert plan(definition, {"a": done(), "b": done(result={"x": 1})}, T0).finish == Finished("completed")
    assert render_output(definition, {"a": done(), "b": done(result={"x": 1})}, None) == {"b": {"x": 1}}


def test_completed_with_failures_names_each_failed_step_when_the_output_still_exists() -> None:
    definition = steps_flow(code("a"), code("b"), code("c"), code("report", "a", "b", "c", trigger_rule="all_done"),
                            header="")
    records = {"a": failed(error={"code": "x"}), "b": done(), "c": failed(state=S.TIMED_OUT),
               "report": done(result="ok")}
    finish = plan(definition, records, T0).finish
    assert isinstance(finish, Finished) and finish.status == "completed_with_failures"
    assert [(failure.step, failure.state) for failure in finish.failures] == [("a", S.FAILED), ("c", S.TIMED_OUT)]


def test_a_run_whose_output_step_did_not_run_failed() -> None:
    text = "name: t\noutput: b\nsteps:\n" + code("a") + "\n" + code("b", "a") + "\n"
    definition = load(text)
    finish = plan(definition, {"a": failed()}, T0).finish
    settled = {"a": failed(), "b": replace(failed(), state=S.UPSTREAM_FAILED)}
    assert finish == Finished("failed", outcome(definition, settled).failures, ("b",))
    assert [failure.step for failure in finish.failures] == ["a"]


def test_a_template_output_renders_and_an_excluded_step_renders_as_nothing() -> None:
    definition = flow(SWITCH.replace('      - {id: start, kind: code, code: "1"}',
                                     '      - {id: start, kind: code, code: "1"}')
                      + '    output: "n={{ steps.start.result }} [{{ steps.big.result }}]"\n')
    records = {"start": done(result=3), "big": replace(done(), state=S.EXCLUDED, result=None)}
    assert render_output(definition, records, None) == "n=3 []"


def test_a_run_that_cannot_move_is_reported_stuck_with_the_steps_it_waits_on() -> None:
    # max_concurrent 0 cannot come from a file (the schema refuses it); built directly to reach the branch.
    definition = FlowDefinition(name="t", steps=(Step("a", CodeBody("1")), Step("b", CodeBody("1"), deps=("a",))),
                                max_concurrent=0)
    finish = plan(definition, {}, T0).finish
    assert isinstance(finish, Stuck) and finish.waiting == ("a", "b") and "a, b" in finish.reason
    assert plan(definition, {"a": running()}, T0).finish is None


# --- crash reconciliation ------------------------------------------------------------------------------


RETRY_TWICE = steps_flow(code("a", retries={"max_attempts": 2}))
ONCE = steps_flow(code("a"))
CHILD_STATES: list[RunStatus | None] = [None, *RunStatus]


def expected_reconciliation(record: StepRecord, child: RunStatus | None, attempts_left: bool) -> type:
    """The table of docs/flows.md, written out row by row."""
    if record.state != S.RUNNING:
        ended_attempt = record.state in (S.TIMED_OUT, S.CANCELLED, S.FAILED)
        still_going = child in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING)
        return CancelChild if ended_attempt and still_going else Leave
    return {None: Redispatch, RunStatus.QUEUED: KeepWaiting, RunStatus.RUNNING: KeepWaiting,
            RunStatus.WAITING: KeepWaiting, RunStatus.COMPLETED: MarkDone, RunStatus.COMPLETED_WITH_FAILURES: MarkDone,
            RunStatus.CANCELLED: MarkCancelled,
            RunStatus.FAILED: Retry if attempts_left else MarkFailed,
            RunStatus.INTERRUPTED: Retry if attempts_left else MarkFailed}[child]


@pytest.mark.parametrize("state", list(StepState))
@pytest.mark.parametrize("child", CHILD_STATES, ids=lambda child: child.value if child else "no-child")
@pytest.mark.parametrize("definition", [RETRY_TWICE, ONCE], ids=["attempts-left", "last-attempt"])
def test_reconcile_decides_every_record_state_and_child_state(state: StepState, child: RunStatus | None,
                                                              definition: FlowDefinition) -> None:
    record = StepRecord(state, 1, 1, T0, None if state in (S.PENDING, S.RUNNING) else T0,
                        {"answer": 42} if state == S.COMPLETED else None)
    child_run = None if child is None else ChildRun(child, result={"answer": 42}, error=None)
    decision = reconcile(definition.step("a"), record, child_run)
    assert type(decision) is expected_reconciliation(record, child, definition is RETRY_TWICE)
    if isinstance(decision, MarkDone):
        assert decision.result == {"answer": 42}
    if isinstance(decision, (Redispatch, Retry)):
        assert decision.attempt == (1 if isinstance(decision, Redispatch) else 2)
    if state == S.COMPLETED:
        assert isinstance(decision, Leave)  # nothing that finished runs again


def test_a_failed_child_error_is_kept_and_an_interrupted_one_is_named() -> None:
    assert reconcile(ONCE.step("a"), running(), ChildRun(RunStatus.FAILED, error={"code": "model_error"})) == \
        MarkFailed({"code": "model_error"})
    assert reconcile(ONCE.step("a"), running(), ChildRun(RunStatus.INTERRUPTED)) == \
        MarkFailed({"code": "child_interrupted", "message": "the step's run was interrupted"})


# --- rerun and cancel ----------------------------------------------------------------------------------


def test_rerun_from_a_step_resets_it_and_its_dependents_and_keeps_everything_else_as_it_was() -> None:
    definition = steps_flow(code("a"), code("b", "a"), code("c", "b"), code("d", "a"), code("e", "c", "d"))
    records = {"a": done(1, "A"), "b": done(3, "B"), "c": done(1, "C"), "d": done(2, {"D": [1]}), "e": done(1, "E")}
    rerun = rerun_from(definition, records, "b")
    assert rerun.reset == ("b", "c", "e")
    for kept in ("a", "d"):
        assert rerun.records[kept] is records[kept]
    assert rerun.records["b"] == StepRecord(S.PENDING, attempt=3, first_attempt=4)
    decided = plan(definition, rerun.records, T0)
    assert [(dispatch.step, dispatch.attempt) for dispatch in decided.dispatch] == [("b", 4)]
    with pytest.raises(KeyError):
        rerun_from(definition, records, "zz")


def test_a_rerun_step_gets_a_full_retry_budget_without_reusing_an_attempt_number() -> None:
    definition = steps_flow(code("a", retries={"max_attempts": 2, "backoff_seconds": 0}))
    records = rerun_from(definition, {"a": failed(2)}, "a").records
    records = apply(records, plan(definition, records, T0), T0)
    assert records["a"].attempt == 3 and not accept_result(records["a"], 2)
    records["a"] = replace(records["a"], state=S.FAILED, finished_at=T0)
    assert [(dispatch.step, dispatch.attempt) for dispatch in plan(definition, records, T0).dispatch] == [("a", 4)]


def test_cancel_cancels_every_unfinished_step_and_leaves_finished_ones() -> None:
    definition = steps_flow(code("a"), code("b"), code("c", retries={"max_attempts": 2}), code("d", "a"), code("e"))
    records = {"a": done(), "b": running(), "c": failed(1), "e": failed(1)}
    cancelled = cancel(definition, records)
    assert ([(mark.step, mark.state) for mark in cancelled.mark]
            == [("b", S.CANCELLED), ("c", S.CANCELLED), ("d", S.CANCELLED)])
    assert cancelled.finish.status == "cancelled"
    assert [failure.step for failure in cancelled.finish.failures] == ["e"]


# --- a 40-step flow under a simulated run loop ------------------------------------------------------------


def forty_steps() -> FlowDefinition:
    lines = [code("root")]
    lines += [code(f"fetch{i}", "root", batch="net", retries={"max_attempts": 2, "backoff_seconds": 0})
              for i in range(12)]
    lines += [code(f"parse{i}", f"fetch{i}", batch="cpu") for i in range(12)]
    lines += [code(f"pair{i}", f"parse{2 * i}", f"parse{2 * i + 1}") for i in range(6)]
    lines += [code(f"check{i}", f"pair{i}", when="true") for i in range(6)]
    lines += [code("gate", *(f"check{i}" for i in range(6)), trigger_rule="none_failed_min_one_success")]
    lines += [code("final", "gate", "root"), code("audit", "root", trigger_rule="all_done")]
    header = "max_concurrent: 5\nbatches: {net: {max_concurrent: 3}, cpu: {max_concurrent: 2}}\n"
    definition = steps_flow(*lines, header=header)
    assert len(definition.steps) == 40
    return definition


def concurrency(definition: FlowDefinition, records: dict[str, StepRecord]) -> tuple[int, dict[str, int]]:
    busy = [definition.step(step) for step, record in records.items() if record.state == S.RUNNING]
    per_batch: dict[str, int] = {}
    for step in busy:
        if step.batch:
            per_batch[step.batch] = per_batch.get(step.batch, 0) + 1
    return len(busy), per_batch


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_forty_steps_with_batches_never_exceed_the_limits_in_a_random_completion_order(seed: int) -> None:
    definition, chance = forty_steps(), random.Random(seed)
    records: dict[str, StepRecord] = {}
    now, dispatched, peak = T0, [], 0
    for _ in range(500):
        guards = plan(definition, records, now).evaluate_guards
        decided = plan(definition, records, now, {guard.step: (True,) for guard in guards})
        if isinstance(decided.finish, (Finished, Stuck)):
            break
        records = apply(records, decided, now)
        dispatched += [(dispatch.step, dispatch.attempt) for dispatch in decided.dispatch]
        total, per_batch = concurrency(definition, records)
        peak = max(peak, total)
        assert total <= 5 and per_batch.get("net", 0) <= 3 and per_batch.get("cpu", 0) <= 2, (total, per_batch)
        busy = sorted(step for step, record in records.items() if record.state == S.RUNNING)
        for step in chance.sample(busy, chance.randint(1, len(busy))) if busy else []:
            first_fetch_try = step.startswith("fetch") and records[step].attempt == 1 and chance.random() < 0.3
            records[step] = replace(records[step], state=S.FAILED if first_fetch_try else S.COMPLETED,
                                    finished_at=now, result=None if first_fetch_try else step)
        now += timedelta(seconds=1)
    assert decided.finish == Finished("completed")
    assert peak == 5
    steps_run = [step for step, _ in dispatched]
    assert sorted(set(steps_run)) == sorted(step.id for step in definition.steps)
    assert len(steps_run) == len(set(dispatched))  # no attempt dispatched twice
    assert all(records[step.id].state == S.COMPLETED for step in definition.steps)


@pytest.mark.parametrize("name", ["review-diff", "triage-failing-test", "release-notes"])
@pytest.mark.parametrize("guards", [True, False])
def test_each_catalog_flow_runs_to_completion_whichever_way_its_guards_go(name: str, guards: bool) -> None:
    catalog = Path(__file__).parent.parent / "orchestrator" / "flows" / "catalog"
    definition = load((catalog / f"{name}.yaml").read_text())
    records: dict[str, StepRecord] = {}
    for _ in range(50):
        asked = plan(definition, records, T0).evaluate_guards
        decided = plan(definition, records, T0, {ask.step: (guards,) * len(ask.expressions) for ask in asked})
        if decided.finish is not None:
            break
        records = apply(records, decided, T0)
        for step, record in list(records.items()):
            if record.state == S.RUNNING:
                records[step] = replace(record, state=S.COMPLETED, finished_at=T0, result=f"result of {step}")
    assert decided.finish == Finished("completed")
    states = {step.id: records[step.id].state for step in definition.steps}
    assert S.EXCLUDED in states.values() or S.SKIPPED in states.values() or guards
    assert render_output(definition, records, {"version": "1.0"})


# --- schedules ---------------------------------------------------------------------------------------------


def at(text: str, tz: str = "UTC") -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=cron.zone(tz))


CRON_CASES = [
    ("*/15 * * * *", "UTC", "2026-01-01T10:07", "2026-01-01T10:15"),
    ("0 9 * * mon-fri", "Europe/Paris", "2026-12-04T09:00", "2026-12-07T09:00"),  # Friday 09:00 -> Monday
    ("30 2 * * *", "America/New_York", "2026-03-07T12:00", "2026-03-08T03:30"),  # 02:30 does not exist that night
    ("0 0 29 2 *", "UTC", "2026-01-01T00:00", "2028-02-29T00:00"),
    ("0 12 13 * fri", "UTC", "2026-02-01T00:00", "2026-02-06T12:00"),  # both day fields: either matches
    ("@monthly", "UTC", "2026-01-15T00:00", "2026-02-01T00:00"),
    ("5 4 * jan,jul sun", "UTC", "2026-01-01T00:00", "2026-01-04T04:05"),
    ("0 0 * * 7", "UTC", "2026-01-01T00:00", "2026-01-04T00:00"),  # 7 is Sunday too
    ("*/15 * * * *", "UTC", "2026-01-01T10:14:59", "2026-01-01T10:15"),  # a five-field cron fires on the minute
    ("*/20 * * * * *", "UTC", "2026-01-01T10:00:41", "2026-01-01T10:01:00"),  # six fields: seconds first
    ("5,35 30 9 * * *", "UTC", "2026-01-01T09:30:05", "2026-01-01T09:30:35"),
    ("*/10 59 23 31 12 *", "UTC", "2026-12-31T23:59:55", "2027-12-31T23:59:00"),
]


@pytest.mark.parametrize(("expr", "tz", "after", "expected"), CRON_CASES)
def test_next_firing(expr: str, tz: str, after: str, expected: str) -> None:
    assert cron.next_after(expr, tz, at(after, tz)) == at(expected, tz)


def test_a_wall_time_repeated_by_the_autumn_change_fires_once() -> None:
    tz = "America/New_York"
    first = cron.next_after("30 1 * * *", tz, at("2026-11-01T00:00", tz))
    assert first is not None and first.utcoffset() == timedelta(hours=-4)
    assert cron.next_after("30 1 * * *", tz, first) == at("2026-11-02T01:30", tz)
    hourly, fired = at("2026-11-01T00:10", tz), []
    for _ in range(4):
        hourly = cron.next_after("30 * * * *", tz, hourly)
        fired.append(hourly.astimezone(UTC).hour)
    assert fired == [4, 5, 7, 8]  # 00:30 and 01:30 EDT, then 02:30 and 03:30 EST: 01:30 EST is not repeated


@pytest.mark.parametrize(("expr", "fragment"), [("* * * *", "5 fields"), ("60 * * * *", "minute: 60"),
                                                ("60 * * * * *", "second: 60"), ("* * * * * * *", "or 6"),
                                                ("* * * * mon-xyz", "day of week"), ("*/0 * * * *", "at least 1"),
                                                ("5-1 * * * *", "backwards")])
def test_bad_cron_expressions_name_the_field(expr: str, fragment: str) -> None:
    with pytest.raises(cron.CronError, match=fragment):
        cron.parse(expr)


OVERLAP = [
    # (policy, open runs, buffered, decision)
    ("skip", [], 0, cron.Start()),
    ("skip", ["r1"], 0, cron.Skip()),
    ("buffer_one", ["r1"], 0, cron.Buffer()),
    ("buffer_one", ["r1"], 1, cron.Skip()),
    ("buffer_all", ["r1"], 5, cron.Buffer()),
    ("buffer_all", [], 0, cron.Start()),
    ("cancel_other", ["r1", "r2"], 0, cron.CancelThenStart(("r1", "r2"))),
    ("cancel_other", [], 0, cron.Start()),
    ("buffer_one", [], 1, cron.Skip()),  # a buffered firing goes first, and one is already waiting
]


@pytest.mark.parametrize(("policy", "open_runs", "buffered", "decision"), OVERLAP)
def test_overlap_policies(policy: str, open_runs: list[str], buffered: int, decision: cron.OverlapDecision) -> None:
    assert cron.decide_overlap(policy, open_runs, buffered) == decision


def test_a_buffered_firing_starts_once_nothing_is_open() -> None:
    assert cron.start_buffered([], 2) and not cron.start_buffered(["r1"], 2) and not cron.start_buffered([], 0)


@pytest.mark.parametrize(("outage_minutes", "window", "fired", "missed"), [
    (2, 300, 2, 0),   # a 2-minute outage inside a 5-minute window: both firings fire late
    (2, 60, 1, 1),    # the same outage outside a 1-minute window: the older firing is missed
    (10, 0, 1, 9),    # window 0 still fires what is under a minute late (the beat ticks late)
])
def test_catch_up_after_downtime(outage_minutes: int, window: int, fired: int, missed: int) -> None:
    last = at("2026-01-01T10:00")
    now = last + timedelta(minutes=outage_minutes, seconds=30)
    result = cron.catch_up("* * * * *", "UTC", last, now, window)
    assert (len(result.fire), result.missed) == (fired, missed)
    assert list(result.fire) == sorted(result.fire) and all(last < firing <= now for firing in result.fire)


def test_a_new_schedule_does_not_fire_its_past_and_a_long_outage_is_bounded() -> None:
    now = at("2026-01-01T10:00:30")
    assert cron.catch_up("0 * * * *", "UTC", now, now, 3600).fire == ()
    month = cron.catch_up("* * * * *", "UTC", now - timedelta(days=30), now, 3 * 3600)
    assert len(month.fire) == cron.MAX_CATCH_UP and month.missed >= cron.MAX_MISSED_COUNTED
