"""The workflow sandbox: script loading, determinism, escapes and limits, primitives, structural keys."""

from __future__ import annotations

import json

import pytest

from orchestrator.workflow.sandbox import Sandbox, SandboxError, run_to_completion
from orchestrator.workflow.script import ScriptError, load_script

HEADER = 'export const meta = { name: "t", description: "a test" };\n'


def run(body: str, answer=lambda call: call["prompt"].upper(), args=None, **options):  # type: ignore[no-untyped-def]
    return run_to_completion(load_script(HEADER + body), args or {}, answer, **options)


# ---- loading

def test_meta_is_parsed_as_a_literal() -> None:
    script = load_script('''// a comment first
export const meta = {
  name: "review", description: 'Reviews code', // trailing comment
  phases: ["read", `judge`], whenToUse: null, weight: 1.5,
};
return 1;''')
    assert script.meta == {"name": "review", "description": "Reviews code", "phases": ["read", "judge"],
                           "whenToUse": None, "weight": 1.5}
    assert script.body.count("\n") == script.source.count("\n")  # line numbers kept


@pytest.mark.parametrize("source, line, words", [
    ('export const meta = { name: pick(), description: "x" };', 1, "literal"),
    ('export const meta = {\n  name: `n-${x}`, description: "x" };', 2, "template substitutions"),
    ('export const meta = { name, description: "x" };', 1, "shorthand"),
    ('const meta = { name: "x" };', 1, "export const meta"),
    ('export const meta = { description: "x" };', 1, "meta.name"),
    ('export const meta = { name: "x", description: "d" };\n\nconst t = Date.now();', 3, "Date.now()"),
    ('export const meta = { name: "x", description: "d" };\nif (Math.random() > .5) {}', 2, "Math.random()"),
    ('export const meta = { name: "x", description: "d" };\nconst d = new Date();', 2, "new Date()"),
])
def test_bad_scripts_are_refused_before_running(source: str, line: int, words: str) -> None:
    with pytest.raises(ScriptError) as caught:
        load_script(source)
    assert caught.value.line == line and words in caught.value.message


def test_clock_words_in_strings_and_comments_are_fine() -> None:
    load_script(HEADER + '// never call Date.now() here\nlog("Math.random() is banned");\n'
                'return new Date(0).getTime();')


def test_size_cap_and_syntax_errors_with_lines() -> None:
    with pytest.raises(ScriptError):
        load_script(HEADER + "log('x');\n" * 40000)
    with pytest.raises(SandboxError) as caught:
        run("const a = 1;\nconst b = ;\n")
    assert caught.value.code == "script_syntax" and caught.value.line == 3


# ---- determinism at run time, also through aliases

@pytest.mark.parametrize("expression", [
    "const D = Date; D.now()",
    "globalThis['Da' + 'te'].now()",
    "new Date(0).constructor.now()",
    "Reflect.construct(Date, [])",
    "const D = Date; D()",
    "Math['ran' + 'dom']()",
    "new Intl.DateTimeFormat('en').format()",
])
def test_clock_and_randomness_through_aliases_throw(expression: str) -> None:
    state = run(f"log('before');\n{expression};\nreturn 1;")
    assert state["error"]["name"] == "DeterminismError" and state["error"]["line"] == 3
    assert "pass values in through args" in state["error"]["message"]


def test_dates_from_values_still_work() -> None:
    assert run("return new Date(86400000).toISOString();")["result"] == "1970-01-02T00:00:00.000Z"


# ---- escapes and limits

def test_no_host_capabilities() -> None:
    state = run("return [typeof require, typeof process, typeof fetch, typeof WebAssembly, typeof SharedArrayBuffer,"
                " typeof XMLHttpRequest, typeof Deno];")
    assert state["result"] == ["undefined"] * 7
    assert run("await import('fs');")["error"] is not None
    escaped = run("return (() => {}).constructor('return typeof process')();")
    assert escaped["result"] == "undefined"


def test_prototype_pollution_cannot_reach_the_host_api() -> None:
    state = run('''
Array.prototype.map = () => ["hijacked"];
Object.prototype.polluted = "yes";
try { agent.call = () => "fake"; } catch (e) {}
try { Promise.prototype.then = function () { return "hijacked"; }; } catch (e) {}
const results = await parallel([() => agent("one"), () => agent("two")]);
return { results, polluted: ({}).polluted ?? null };''')
    assert state["error"] is None
    assert state["result"] == {"results": ["ONE", "TWO"], "polluted": None}


@pytest.mark.parametrize("body", ["while (true) {}", "await null;\nwhile (true) {}",
                                  "const x = await agent('a');\nfor (;;) {}"])
def test_endless_loops_before_and_after_await_fail_the_run(body: str) -> None:
    with pytest.raises(SandboxError) as caught:
        run(body, timeout_seconds=0.5)
    assert caught.value.code == "script_timeout"
    assert run("return 'the process is fine';")["result"] == "the process is fine"


def test_huge_allocations_fail_the_run() -> None:
    with pytest.raises(SandboxError) as caught:
        run("const hoard = []; while (true) { hoard.push(new Array(1e6).fill(7)); }", timeout_seconds=10)
    assert caught.value.code in ("script_memory", "script_timeout")
    assert run("return 2 + 2;")["result"] == 4


# ---- primitives

def test_parallel_keeps_order_and_failures_become_null() -> None:
    def answer(call):  # type: ignore[no-untyped-def]
        if call["prompt"] == "bad":
            raise RuntimeError("agent died")
        return call["prompt"]

    state = run("return await parallel(['a', 'bad', 'c'].map((p) => () => agent(p)));", answer)
    assert state["result"] == ["a", None, "c"]
    assert [(failure["index"], failure["error"]["message"]) for failure in state["failures"]] == [(1, "agent died")]


def test_parallel_needs_thunks() -> None:
    state = run("return await parallel([agent('a')]);")
    assert "pass an array of functions" in state["error"]["message"]


def test_pipeline_items_move_through_stages_independently() -> None:
    script = load_script(HEADER + '''
return await pipeline(["x", "y", "z"],
  (item) => agent("draft " + item),
  (draft, item) => item === "y" ? null : agent("polish " + draft));''')
    with Sandbox(script, {}) as sandbox:
        sandbox.start()
        first = sandbox.take_calls()
        assert [call["prompt"] for call in first] == ["draft x", "draft y", "draft z"]
        answer(sandbox, first[0]["key"], "X1")
        # item x reaches stage 2 while y and z are still in stage 1: no barrier between stages
        assert [call["prompt"] for call in sandbox.take_calls()] == ["polish X1"]
        answer(sandbox, first[1]["key"], "Y1")
        assert sandbox.take_calls() == []  # stage 2 returned null for y: that item ends as null
        answer(sandbox, first[2]["key"], "Z1")
        assert [call["prompt"] for call in sandbox.take_calls()] == ["polish Z1"]
        assert not sandbox.state()["done"]
    result = run('''return await pipeline(["x", "y"], (item) => agent("draft " + item),
                   (draft) => agent("polish " + draft));''', lambda call: call["prompt"].split()[-1] + "!")
    assert result["result"] == ["x!!", "y!!"]


def test_budget_stops_new_agents_and_options_are_checked() -> None:
    state = run("const out = [];\nfor (const p of ['a', 'b', 'c']) out.push(await agent(p));\nreturn out;", budget=2)
    assert state["error"]["name"] == "WorkflowBudgetExceededError" and state["error"]["line"] == 3
    assert len(state["calls"]) == 2
    assert "unknown option" in run("await agent('a', { colour: 'red' });")["error"]["message"]
    assert run("await agent('a');\nreturn [budget.total, budget.spent(), budget.remaining()];", budget=5)["result"] == [
        5, 1, 4]
    custom = run("class Oops extends Error { constructor(m) { super(m); this.name = 'Oops'; } }\nthrow new Oops('x');")
    assert custom["error"]["name"] == "Oops"  # the script's own Error subclasses work


def test_errors_carry_the_scripts_line() -> None:
    state = run("const a = await agent('a');\n\nthrow new Error('boom: ' + a);")
    assert state["error"] == {"name": "Error", "message": "boom: A", "line": 4}


def answer(sandbox: Sandbox, key: str, value: object) -> None:
    """Settle one call; every call made before it was already taken, so none comes back."""
    assert sandbox.step(0, key, True, json.dumps(value)) == []


# ---- keys come from structure, never from timing

SEQUENTIAL = '''const a = await agent("{first}");
const b = await agent("{second}");
const c = await agent("third");
return [a, b, c];'''


def keys_of(body: str, order=None) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Run with a chosen answering order among the calls waiting at each step (default: first come)."""
    script = load_script(HEADER + body)
    keys: dict[str, str] = {}
    with Sandbox(script, {}) as sandbox:
        sandbox.start()
        waiting = sandbox.take_calls()
        while waiting:
            if order == "last-first":
                waiting.reverse()
            call = waiting.pop(0)
            keys[call["prompt"]] = call["key"]
            answer(sandbox, call["key"], call["prompt"])
            waiting = waiting + sandbox.take_calls() if order != "last-first" else sandbox.take_calls() + waiting[::-1]
        assert sandbox.state()["done"]
    return keys


def test_a_changed_call_changes_its_key_and_the_rest_of_its_chain() -> None:
    before = keys_of(SEQUENTIAL.format(first="first", second="second"))
    after = keys_of(SEQUENTIAL.format(first="first", second="second, edited"))
    assert before["first"] == after["first"]
    assert before["second"] != after["second, edited"]
    assert before["third"] != after["third"]  # it may depend on what changed


def test_a_changed_parallel_slot_changes_only_itself_and_what_follows() -> None:
    body = '''const results = await parallel(PROMPTS.map((p) => () => agent(p)));
return await agent("summary of " + results.length);'''
    prompts = [f"slot {index}" for index in range(10)]
    edited = [*prompts[:4], "slot 4, edited", *prompts[5:]]
    before = keys_of(body.replace("PROMPTS", repr(prompts)))
    after = keys_of(body.replace("PROMPTS", repr(edited)))
    assert [before[p] == after.get(p) for p in prompts] == [True] * 4 + [False] + [True] * 5
    assert before["summary of 10"] != after["summary of 10"]


def test_keys_do_not_depend_on_completion_order() -> None:
    body = '''const [x, y] = await parallel([
  async () => { const a = await agent("a1"); return agent("a2 after " + a); },
  async () => { const b = await agent("b1"); return agent("b2 after " + b); }]);
return await agent("end " + x + " " + y);'''
    assert keys_of(body) == keys_of(body, order="last-first")


# ---- nothing of the host in the script's reach

BUILTINS = ["Object", "Function", "Array", "Number", "parseFloat", "parseInt", "Infinity", "NaN", "undefined",
            "Boolean", "String", "Symbol", "Date", "Promise", "RegExp", "Error", "AggregateError", "EvalError",
            "RangeError", "ReferenceError", "SyntaxError", "TypeError", "URIError", "globalThis", "JSON", "Math",
            "Intl", "ArrayBuffer", "Uint8Array", "Int8Array", "Uint16Array", "Int16Array", "Uint32Array",
            "Int32Array", "BigUint64Array", "BigInt64Array", "Uint8ClampedArray", "Float32Array", "Float64Array",
            "DataView", "Map", "BigInt", "Set", "Iterator", "WeakMap", "WeakSet", "Proxy", "Reflect", "decodeURI",
            "decodeURIComponent", "encodeURI", "encodeURIComponent", "escape", "unescape", "eval", "isFinite",
            "isNaN", "SuppressedError", "DisposableStack", "AsyncDisposableStack", "Float16Array"]
DOCUMENTED = ["agent", "parallel", "pipeline", "phase", "log", "workflow", "args", "budget", "console", "setTimeout",
              "clearTimeout", "DeterminismError", "WorkflowBudgetExceededError"]


def test_the_global_object_holds_exactly_the_builtins_and_the_documented_globals() -> None:
    state = run("return [Object.getOwnPropertyNames(globalThis), Object.getOwnPropertySymbols(globalThis).length];")
    names, symbols = state["result"]
    assert sorted(names) == sorted(BUILTINS + DOCUMENTED) and len(names) == len(set(names))
    assert symbols == 0


SEARCH_EVERYTHING = '''
const seen = new Set(), found = [];
function visit(value, path, depth) {
  if (value === null || (typeof value !== "object" && typeof value !== "function") || seen.has(value)
      || depth > 6) return;
  seen.add(value);
  for (const key of Reflect.ownKeys(value)) {
    const label = path + "." + String(key);
    if (/host|boocode|setBudget|^state$|takeCalls|step/i.test(String(key))) found.push(label);
    let inner;
    try {
      const d = Reflect.getOwnPropertyDescriptor(value, key);
      inner = "value" in d ? d.value : (d.get && d.get.call(value));
    }
    catch (e) { continue; }
    visit(inner, label, depth + 1);
  }
  try { visit(Object.getPrototypeOf(value), path + ".__proto__", depth + 1); } catch (e) {}
}
visit(globalThis, "globalThis", 0);
for (const name of Object.getOwnPropertyNames(globalThis)) {
  const value = globalThis[name];
  if (typeof value === "function") {
    for (const probe of [() => value.caller, () => value.arguments, () => value("setBudget", null, 0)]) {
      try { const got = probe(); if (typeof got === "function") found.push(name + " leaks a function"); } catch (e) {}
    }
  }
}
return found;'''


def test_a_script_searching_everything_finds_no_way_to_the_host() -> None:
    state = run(SEARCH_EVERYTHING)
    assert state["error"] is None, state["error"]
    assert state["result"] == []


def test_budget_and_failures_cannot_be_changed_from_the_script() -> None:
    state = run('''
const attempts = [];
for (const attack of [() => { budget.total = 1e12; }, () => { budget.spent = () => 0; },
                      () => Object.defineProperty(budget, "total", {get: () => null}),
                      () => Object.setPrototypeOf(budget, {}), () => { Error.prepareStackTrace = () => "x"; },
                      () => Object.defineProperty(Error, "prepareStackTrace", {value: () => "x"}),
                      () => { globalThis.Promise = function () {}; }, () => { delete globalThis.Object; }]) {
  try { "use strict"; attack(); attempts.push("no error"); } catch (error) { attempts.push(error.name); }
}
await parallel([() => { throw new Error("a real failure"); }]);
await agent("a");
return {attempts, total: budget.total, spent: budget.spent(), hook: typeof Error.prepareStackTrace,
        promise: Promise === (async () => {})().constructor};''', budget=5)
    value = state["result"]
    assert value["total"] == 5 and value["spent"] == 1 and value["hook"] == "undefined" and value["promise"] is True
    assert [failure["error"]["message"] for failure in state["failures"]] == ["a real failure"]


# ---- nesting, args and results

INNER = load_script('export const meta = { name: "inner", description: "nested" };\n'
                    'const x = await agent("inner " + args.n);\n'
                    'for (let i = 0; i < 3; i++) await null;\n'
                    'let grandchild = "ran";\n'
                    'try { await globalThis.workflow("inner", {n: 9}); } '
                    'catch (error) { grandchild = error.message; }\n'
                    'await agent("after " + x);\n'
                    'try { await (0, eval)("workflow")("inner", {n: 10}); } '
                    'catch (error) { grandchild += " / " + error.message; }\n'
                    'return {x, grandchild};\n')


def test_a_grandchild_workflow_is_refused_after_any_number_of_awaits() -> None:
    state = run('const inner = await workflow("inner", {n: 1});\nreturn {inner, after: await agent("root after")};',
                scripts={"inner": INNER})
    assert state["error"] is None, state["error"]
    refusal = "workflow(): workflows nest one level only"
    assert state["result"]["inner"] == {"x": "INNER 1", "grandchild": f"{refusal} / {refusal}"}
    assert [call["prompt"] for call in state["calls"] if call["kind"] == "agent"] == ["inner 1", "after INNER 1",
                                                                                      "root after"]


def test_results_that_are_not_json_fail_naming_the_path() -> None:
    cyclic = run("const a = {b: {}}; a.b.c = [1, 2, a];\nreturn a;")
    assert cyclic["error"]["code"] == "result_not_serialisable"
    assert "result.b.c[2]: a cycle" in cyclic["error"]["message"]
    big = run("return {a: {b: [1, 2, 3n]}};")
    assert big["error"]["code"] == "result_not_serialisable" and "result.a.b[2]: a BigInt" in big["error"]["message"]
    fine = run("return {u: undefined, list: [undefined, () => 1], n: NaN, d: new Date(0), s: new String('x')};")
    assert fine["error"] is None and fine["result"] == {"list": [None, None], "n": None,
                                                        "d": "1970-01-01T00:00:00.000Z", "s": "x"}


def test_agent_arguments_that_are_not_json_are_refused_clearly() -> None:
    state = run('const o = {}; o.self = o;\nconst out = [];\n'
                'for (const options of [{schema: o}, {label: 5n}, {get label() { throw new Error("boom"); }}]) {\n'
                '  try { await agent("a", options); out.push("sent"); } catch (error) { out.push(error.message); }\n}\n'
                'return out;')
    assert state["result"] == ["agent(): options.schema.self: a cycle (the value contains itself)",
                               "agent(): options.label: a BigInt is not JSON (convert it with String() or Number())",
                               "agent(): options.label: reading it threw: boom"]
    assert state["calls"] == []


def test_omitted_args_are_undefined() -> None:
    script = load_script(HEADER + "return [typeof args, args === undefined];")
    assert run_to_completion(script, None, lambda call: None)["result"] == ["undefined", True]
    assert run_to_completion(script, {"a": 1}, lambda call: None)["result"] == ["object", False]


# ---- the sandbox process

def test_scripts_run_in_a_reused_sandbox_process_with_a_clean_environment() -> None:
    import os

    script = load_script(HEADER + "return 1;")
    with Sandbox(script, None) as first:
        pid = first.process_id
        assert pid is not None and pid != os.getpid()
        environment = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        assert sorted(entry.split(b"=")[0] for entry in environment if entry) == [b"LANG", b"PATH"]
        assert os.getsid(pid) == pid  # a session of its own
    with Sandbox(script, None) as second:
        assert second.process_id == pid  # reused, not started per script


def test_the_sandbox_process_imports_no_settings_or_database() -> None:
    import subprocess
    import sys

    probe = ("import sys, orchestrator.workflow.isolate_process, orchestrator.workflow.isolate;"
             "print(sorted(m for m in sys.modules if m.startswith(('sqlalchemy', 'psycopg', 'redis', 'celery', 'flask',"
             " 'orchestrator.settings', 'orchestrator.store', 'orchestrator.services'))))")
    out = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]"


def test_a_fatal_v8_error_kills_only_the_sandbox_process_and_the_pool_replaces_it() -> None:
    import os

    for body in ["new Array(2**28).fill(1.5);", "await agent('x');\nnew Array(2**28).fill(1.5);"]:
        with pytest.raises(SandboxError) as caught:
            run(body, timeout_seconds=30)
        assert caught.value.code == "script_crashed" and caught.value.signal == "SIGTRAP"
        assert "out of memory" in caught.value.message.lower()
    assert run("return 'still here';")["result"] == "still here"
    assert os.getpid()  # this process (the caller) carries on


def test_a_segfault_or_a_hang_v8_misses_is_contained() -> None:
    import os
    import signal

    script = load_script(HEADER + "await agent('x');\nreturn 1;")
    sandbox = Sandbox(script, None)
    sandbox.start()
    os.kill(sandbox.process_id, signal.SIGSEGV)
    with pytest.raises(SandboxError) as caught:
        sandbox.take_calls()
    assert caught.value.code == "script_crashed" and caught.value.signal == "SIGSEGV"
    with pytest.raises(SandboxError) as caught:
        sandbox.state()
    assert caught.value.code == "sandbox_closed"
    sandbox.close()

    hung = Sandbox(script, None, timeout_seconds=0.2)
    hung.start()
    pid = hung.process_id
    os.kill(pid, signal.SIGSTOP)  # V8's own timer cannot fire in a stopped process: the parent's deadline does
    with pytest.raises(SandboxError) as caught:
        hung.take_calls()
    assert caught.value.code == "script_timeout" and "did not answer" in caught.value.message
    assert not os.path.exists(f"/proc/{pid}/status") or "zombie" in open(f"/proc/{pid}/status").read()
    hung.close()
    assert run("return 3;")["result"] == 3
