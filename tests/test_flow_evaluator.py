"""The evaluator a flow tick runs its code steps and guards in: many scripts, one isolate of one real
sandbox process, and nothing one script does reaches the next (orchestrator/workflow/isolate.py)."""

from __future__ import annotations

import pytest

from orchestrator.flows.evaluation import Limits, evaluate_code, evaluate_codes, evaluator_for
from orchestrator.workflow.sandbox import Evaluator, SandboxError


@pytest.fixture
def evaluator():  # type: ignore[no-untyped-def]
    with Evaluator(timeout_seconds=1.0) as held:
        yield held


def value(evaluator: Evaluator, body: str, args: object = None) -> object:
    state = evaluator.evaluate(body, args)
    assert state["done"] and state["error"] is None, state
    return state["result"]


def test_many_scripts_share_one_process_and_each_gets_its_own_args(evaluator: Evaluator) -> None:
    assert [value(evaluator, "return args.n * 2;", {"n": n}) for n in range(50)] == [n * 2 for n in range(50)]
    process = evaluator.process_id
    assert process is not None
    assert value(evaluator, "return args;") is None
    assert evaluator.process_id == process


# Each attack, then a probe in the same evaluator that would see what the attack left behind.
LEAKS = [
    ("leak = 5; return typeof leak;", "return typeof leak;", "undefined"),
    ("try { globalThis.leak = 5; } catch (e) {} return 1;", "return typeof globalThis.leak;", "undefined"),
    ("var declared = 1; function f() {} return 1;", "return typeof declared + typeof f;", "undefinedundefined"),
    ("Error.prototype.extra = 7; return Error.prototype.extra;", "return String(Error.prototype.extra);",
     "undefined"),
    ("Error.stackTraceLimit = 0; Error.flag = 1; return 1;", "return [Error.stackTraceLimit, typeof Error.flag];",
     [10, "undefined"]),
    ("TypeError.prototype.toString = () => 'mine'; return 1;", "return String(new TypeError('t'));", "TypeError: t"),
    ("Object.defineProperty(RangeError.prototype, 'pinned', {value: 1}); return RangeError.prototype.pinned;",
     "return String(RangeError.prototype.pinned);", "undefined"),
    ("Object.preventExtensions(SyntaxError.prototype); return 1;",
     "SyntaxError.prototype.ok = 1; return SyntaxError.prototype.ok;", 1),
    ("try { Array.prototype.extra = 1; } catch (e) {} return [].extra === undefined;", "return [].extra;", None),
    ("try { Intl.DateTimeFormat.prototype.extra = 1; } catch (e) {} return 1;",
     "return String(Intl.DateTimeFormat.prototype.extra);", "undefined"),
    ("try { ({}).__proto__.extra = 1; } catch (e) {} return 1;", "return String(({}).extra);", "undefined"),
    ("try { (function () {}).constructor.prototype.extra = 1; } catch (e) {} return 1;",
     "return String((function () {}).extra);", "undefined"),
    ("/(secret)/.exec('secret'); return RegExp.$1;", "return RegExp.$1;", ""),
    # breaking out of its function: the script makes its own arguments, and can only be evaluated with them
    ("}), 1]; [(async () => { Error.prototype.out = 1; leak = 1; return 'out'; }), 'null']; [(function () {",
     "return [String(Error.prototype.out), typeof leak];", ["undefined", "undefined"]),
    ("}), 1]; 5 + [(function () {", "return 'still fine';", "still fine"),
]


@pytest.mark.parametrize("attack, probe, clean", LEAKS)
def test_nothing_a_script_leaves_reaches_the_next(evaluator: Evaluator, attack: str, probe: str,
                                                  clean: object) -> None:
    evaluator.evaluate(attack, None)
    assert value(evaluator, probe) == clean


def test_a_script_that_never_finishes_leaves_nothing_pending(evaluator: Evaluator) -> None:
    waits = evaluator.evaluate("await new Promise(() => {}); return 1;", None)
    assert waits["done"] is False
    # a timer queued by a script that ended runs before it is read, never during the next one
    assert value(evaluator, "let seen = 0; setTimeout(() => { seen = 1; }, 0); await null; await null; "
                            "return seen;") == 1
    assert value(evaluator, "return 2;") == 2


def test_a_broken_limit_or_a_syntax_error_ends_that_script_only(evaluator: Evaluator) -> None:
    with pytest.raises(SandboxError) as looped:
        evaluator.evaluate("while (true) {}", None)
    assert looped.value.code == "script_timeout"
    assert value(evaluator, "return 'after the loop';") == "after the loop"
    broken = evaluator.evaluate("return (;", None)
    assert broken["error"]["code"] == "script_syntax" and broken["error"]["line"] == 1
    assert value(evaluator, "return 'after the syntax error';") == "after the syntax error"
    with pytest.raises(SandboxError) as grown:
        evaluator.evaluate("const hoard = []; while (true) { hoard.push(new Array(1e6).fill(7)); }", None)
    assert grown.value.code in ("script_memory", "script_crashed", "script_timeout")
    assert value(evaluator, "return 'after the memory';") == "after the memory"


def test_code_steps_of_a_tick_in_one_evaluator_see_only_their_own_steps() -> None:
    limits = Limits(timeout_seconds=1.0)
    with evaluator_for(limits) as shared:
        first = evaluate_code("steps.a.result + 1", {"n": 1}, {"a": {"result": 41}}, limits, shared)
        second = evaluate_code("const kept = steps; return Object.keys(kept);", None, {"b": {"result": 0}},
                               limits, shared)
        thrown = evaluate_code("const x = 1;\nthrow new Error('no ' + x);", None, {}, limits, shared)
    assert first.ok and first.value == 42
    assert second.ok and second.value == ["b"]
    assert not thrown.ok and thrown.error == {"code": "code_error", "message": "Error: no 1", "line": 2}


def test_one_plans_code_steps_go_in_one_request_and_each_ends_on_its_own() -> None:
    limits = Limits(timeout_seconds=1.0)
    codes = {"double": "input.n * 2", "loops": "while (true) {}", "throws": "null.x",
             "syntax": "return (;", "after": "steps.a.result + input.n"}
    with evaluator_for(limits) as shared:
        results = evaluate_codes(codes, {"n": 5}, {"a": {"result": 10}}, limits, shared)
    assert list(results) == list(codes)
    assert results["double"].ok and results["double"].value == 10
    assert results["loops"].error["code"] == "script_timeout"
    assert results["throws"].error["code"] == "code_error" and "TypeError" in results["throws"].error["message"]
    assert results["syntax"].error["code"] == "script_syntax"
    assert results["after"].ok and results["after"].value == 15  # a new isolate after the broken limit
    spans = [(result.started_at, result.finished_at) for result in results.values()]
    assert all(start is not None and end is not None and start <= end for start, end in spans)
    assert all(spans[index][1] <= spans[index + 1][0] for index in range(len(spans) - 1))  # one after another
    assert (spans[1][1] - spans[1][0]).total_seconds() >= 0.9  # the loop ran to its limit


def test_a_body_that_kills_the_process_fails_alone() -> None:
    with Evaluator(timeout_seconds=5.0, memory_bytes=64 * 1024 * 1024) as shared:
        timed = shared.evaluate_each(["return 1;", "const a = []; while (true) a.push(new Array(1e6).fill(1));",
                                      "return 3;"], None)
    assert [one.state["result"] if one.state else None for one in timed] == [1, None, 3]
    assert timed[1].error is not None and timed[1].error.code in ("script_memory", "script_crashed")


def test_parsing_runs_nothing_even_a_body_that_breaks_out_of_its_function(evaluator: Evaluator) -> None:
    breakout = "}), 1]; Error.prototype.ran = 1; [(function () {"
    found = evaluator.parse_each(["return 1;", "return a +* 2;", "const x = 1;\n\nreturn (", breakout])
    assert found[0] is None
    assert found[1] == {"message": "Unexpected token '*'", "line": 1}
    assert found[2]["line"] == 4  # past the end of the body: the unclosed bracket
    assert found[3] is not None  # as a function body it does not compile
    assert value(evaluator, "return String(Error.prototype.ran);") == "undefined"
