"""V8 isolates for one workflow script, inside the sandbox process (never in a web or worker process).

    session = ScriptSession(body, args, timeout_seconds, memory_bytes)   # the root isolate
    session.start()                          # compile the body and run it until it waits
    session.take_calls()                     # calls made so far:
                                             #   [{key, kind, prompt, options} | {key, kind, spec, args?}]
    session.step(spent, key, ok, payload)    # one result in; returns the calls made before it
    session.steps([(spent, key, ok, payload), ...])   # several, in order, in one request (one V8 task each)
    session.start_nested(key, body, name, args)   # a workflow() call: its script in an isolate of its own
    session.state()                          # done / result / error / logs / failures

    evaluator = Evaluator(timeout_seconds, memory_bytes)   # many short scripts in turn, one isolate
    evaluator.evaluate(body, args)           # one script, a function of `args`, run to its end: its state
    evaluator.evaluate_each(bodies, args)    # several with the same args, each timed, in one request
    evaluator.parse_each(bodies)             # whether each compiles, running none of it (validation)

Each isolate gets the prelude, which returns the host function; Python keeps it as a handle and
never puts it on the global object, so nothing of the host is in the script's reach. Every host
call is timed, and followed by a barrier: code after an `await` runs once the call has returned,
so a trivial eval that can only run when the isolate is idle again bounds that code by the same
sync-execution timeout. A timeout or a memory overrun closes the session's isolates and raises
`IsolateError`; a fatal V8 error takes the whole sandbox process down, which is why this runs there.

Nested workflows run in isolates of their own whose `workflow()` always refuses: the nesting depth
belongs to the realm, so no await or alias reaches a grandchild. The session routes each result to
the isolate that made the call, and when a nested script ends it settles the root's `workflow()`
call with its result, continuing the root's chain from where the nested one ended.

This module imports only the standard library and mini-racer: the sandbox process holds no
settings, database or secrets.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from importlib import resources
from typing import Any

from py_mini_racer import JSEvalException, JSOOMException, JSTimeoutException, JSUndefined, MiniRacer
from py_mini_racer._mini_racer import _make_context

PRELUDE = resources.files("orchestrator.workflow").joinpath("prelude.js").read_text()


class IsolateError(Exception):
    """A limit broken (time, memory), or a script that does not compile; `line` when known."""

    def __init__(self, code: str, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.line = code, message, line


class _BareRacer(MiniRacer):
    """A MiniRacer without mini-racer's own timer globals (`__timer_manager`, `setTimeout` built on
    Atomics): the prelude installs deterministic timers, and the global object holds nothing else."""

    def __init__(self) -> None:  # noqa: D107 - deliberately skips MiniRacer.__init__'s INSTALL_SET_TIMEOUT
        self._own_context_maker = _make_context()
        self._ctx = self._own_context_maker.__enter__()


class Isolate:
    """One V8 isolate with the prelude installed; `call(method, ...)` drives its host function."""

    def __init__(self, timeout_seconds: float, memory_bytes: int, *, nested: bool, chain: str,
                 evaluator: bool = False) -> None:
        self.timeout_seconds = timeout_seconds
        self._context: MiniRacer | None = _BareRacer()
        self._context.set_hard_memory_limit(memory_bytes)
        prelude = self._eval(PRELUDE + "\n//# sourceURL=boocode-prelude.js")
        config = json.dumps({"nested": nested, "chain": chain, "evaluator": evaluator})
        made = self._timed(lambda: prelude(config, timeout_sec=timeout_seconds))
        self._barrier()
        self._evaluate: Any = made[1] if evaluator else None  # an evaluator realm's evaluate function
        self._host: Any = made[0] if evaluator else made
        self._next_step: tuple[Any, ...] | None = None  # handles for `host("nextStep")`, made once when idle
        self._evaluated: tuple[Any, ...] | None = None  # handles for `host("evaluated")` and the evaluate function

    def close(self) -> None:
        if self._context is not None:
            self._next_step = self._evaluated = None
            self._context.close()
            self._context = None
            self._host = self._evaluate = None

    def _timed(self, action: Any) -> Any:
        if self._context is None:
            raise IsolateError("sandbox_closed", "the sandbox was closed after an earlier error")
        try:
            return action()
        except JSTimeoutException:
            self.close()
            raise IsolateError("script_timeout", f"the script ran for more than {self.timeout_seconds}s without "
                               "waiting (an endless loop?); synchronous work between awaits is limited") from None
        except (JSOOMException, JSEvalException) as error:
            out_of_memory = isinstance(error, JSOOMException) or (
                self._context is not None and self._context.was_hard_memory_limit_reached())
            if not out_of_memory:
                raise
            self.close()
            raise IsolateError("script_memory", "the script used more memory than its sandbox allows") from None

    def _live_context(self) -> MiniRacer:
        if self._context is None:
            raise IsolateError("sandbox_closed", "the sandbox was closed after an earlier error")
        return self._context

    def _barrier(self) -> None:
        context = self._live_context()
        self._timed(lambda: context.eval("0", timeout_sec=self.timeout_seconds))

    def _eval(self, code: str, *, barrier: bool = True) -> Any:
        context = self._live_context()
        result = self._timed(lambda: context.eval(code, timeout_sec=self.timeout_seconds))
        if barrier:
            self._barrier()
        return result

    def call(self, method: str, *arguments: Any) -> Any:
        host = self._host
        result = self._timed(lambda: host(method, *arguments, timeout_sec=self.timeout_seconds))
        self._barrier()
        return json.loads(result)

    def steps(self, results: list[tuple[float, str, bool, str]]) -> list[dict[str, Any]]:
        """`call("step", ...)` for each result in order; the calls each returned, concatenated.

        A replay of a 1,000-agent fan-out settles up to 1,000 calls per tick, and a host call through
        mini-racer's public API costs about five trips to V8 (an argument array, one push per
        argument, the call, the barrier). So the results go over in one call (`queueSteps`), and each
        is then settled by `host("nextStep")` with an argument array made once: one cancelable V8
        task per result. Each task starts only once the isolate has drained the previous result's
        continuation, so it is also that drain's barrier, bounded by the same timeout; one barrier
        follows the last. Keys come out exactly as with one `step` call at a time."""
        if not results:
            return []
        self.call("queueSteps", json.dumps(results))
        if _task_runner(self._context) is None:  # a mini-racer without the internals used below
            calls: list[dict[str, Any]] = []
            for _ in results:
                calls += self.call("nextStep")
            return calls
        answers = self._timed(lambda: self._run_next_steps(len(results)))
        return [call for answer in answers for call in json.loads(answer)]

    def _run_next_steps(self, count: int) -> list[str]:
        context = _task_runner(self._context)
        assert context is not None and self._context is not None
        if self._next_step is None:  # the isolate is idle here: queueSteps' barrier has returned
            argv = self._context.eval("[]")
            argv.append("nextStep")  # type: ignore[union-attr]  # eval("[]") is a JSArray; mini-racer types any JS value
            self._next_step = tuple(context._python_to_value_handle(value) for value in (self._host, JSUndefined, argv))
        handles = [handle.raw for handle in self._next_step]
        timeout = self.timeout_seconds

        async def run() -> list[str]:
            answers = []
            for _ in range(count):
                answers.append(await asyncio.wait_for(
                    context._run_cancelable_mr_task(context._dll.mr_call_function, *handles), timeout))
            await asyncio.wait_for(context.eval_cancelable("0"), timeout)  # the last result's drain
            return answers

        try:
            return asyncio.run_coroutine_threadsafe(run(), context.event_loop).result()
        except asyncio.TimeoutError:
            raise JSTimeoutException from None

    def evaluate(self, body: str, args_text: str | None) -> dict[str, Any]:
        """An evaluator realm's script run to its end: `{state, clean}` (prelude `evaluated`).

        Four trips to V8 (the public API takes eleven): the compiled script makes its own argument
        array, `[its function, its args' JSON]`, for the evaluate function; the barrier; `evaluated`
        with an argument array made once. A syntax error raises `script_syntax`."""
        runner = _task_runner(self._context)
        if runner is None:  # a mini-racer without the internals used below
            self.call("evaluate", self.compile(body, "workflow.js", "args"), args_text)
            return self.call("evaluated")
        source = f"[(async function (args) {{{body}\n}}), {json.dumps(args_text)}]\n//# sourceURL=workflow.js"
        if self._evaluated is None:  # the isolate is idle here
            argv = self._live_context().eval("[]")
            argv.append("evaluated")  # type: ignore[union-attr]  # eval("[]") is a JSArray; mini-racer types any JS value
            self._evaluated = tuple(runner._python_to_value_handle(value)
                                    for value in (self._host, JSUndefined, argv, self._evaluate))
        host, this, argv, evaluate = self._evaluated
        timeout = self.timeout_seconds

        async def run() -> str:
            made = await asyncio.wait_for(runner.eval_cancelable(source), timeout)
            own = runner._python_to_value_handle(made)
            await asyncio.wait_for(runner._run_cancelable_mr_task(runner._dll.mr_call_function, evaluate.raw, this.raw,
                                                                  own.raw), timeout)
            await asyncio.wait_for(runner.eval_cancelable("0"), timeout)  # the script's drain
            return await asyncio.wait_for(runner._run_cancelable_mr_task(runner._dll.mr_call_function, host.raw,
                                                                         this.raw, argv.raw), timeout)

        def evaluated() -> str:
            try:
                return asyncio.run_coroutine_threadsafe(run(), runner.event_loop).result()
            except asyncio.TimeoutError:
                raise JSTimeoutException from None

        try:
            return json.loads(self._timed(evaluated))
        except JSEvalException as error:
            message, line = _syntax_error(str(error))
            raise IsolateError("script_syntax", message, line) from None

    def parse(self, body: str) -> dict[str, Any] | None:
        """None if the body is a valid async function body of `args`, else `{message, line}`; nothing of
        it runs. The function constructor parses it as a body alone (it cannot close the function
        and go on); for the line, the wrapped script is compiled behind a `throw` that stops it before
        its first statement, should it parse as a script at all."""
        context = self._live_context()
        check = (f"(() => {{ try {{ new (async function () {{}}).constructor('args', {json.dumps(body)}); "
                 "return null; } catch (error) { return String(error && error.message); } })()")
        message = self._timed(lambda: context.eval(check, timeout_sec=self.timeout_seconds))
        if message is None:
            return None
        try:
            self._timed(lambda: context.eval(f"throw 0; (async function (args) {{{body}\n}})",
                                             timeout_sec=self.timeout_seconds))
        except JSEvalException as error:
            if "SyntaxError" in str(error):
                found, line = _syntax_error(str(error), anonymous=True)
                return {"message": found.removeprefix("SyntaxError: "), "line": line}
        return {"message": str(message), "line": None}

    def compile(self, body: str, source_name: str, parameters: str = "") -> Any:
        """The body as an async function (not run yet: no barrier needed); a syntax error raises
        `script_syntax`."""
        try:
            return self._eval(f"(async function ({parameters}) {{{body}\n}})\n//# sourceURL={source_name}",
                              barrier=False)
        except JSEvalException as error:
            message, line = _syntax_error(str(error))
            raise IsolateError("script_syntax", message, line) from None

    def start(self, body: str, args_text: str | None, source_name: str) -> None:
        """Compile the body (a syntax error is reported before anything runs), then start it."""
        try:
            run = self.compile(body, source_name)
        except IsolateError:
            self.close()
            raise
        self.call("start", run, args_text)


class Evaluator:
    """Many short scripts in turn, each a function of its `args` (a flow tick's code steps and guards),
    in one isolate: an isolate and its prelude cost about 15 ms, a script in a warm one well under 1.
    The realm is frozen deep and its global object closed (prelude, evaluator realms), so a script
    can leave nothing behind for the next one: what it may change (the Error types) is put back after
    it, and the isolate is replaced when that cannot be done exactly, or when a script did not finish
    (something may still be pending in it). A syntax error is the script's outcome, not the realm's:
    it comes back as the state's error. A limit broken (time, memory) raises `IsolateError`, and the
    next script gets a new isolate."""

    def __init__(self, timeout_seconds: float, memory_bytes: int) -> None:
        self.timeout_seconds, self.memory_bytes = timeout_seconds, memory_bytes
        self.isolate: Isolate | None = None

    def close(self) -> None:
        if self.isolate is not None:
            isolate, self.isolate = self.isolate, None
            isolate.close()

    def _live(self) -> Isolate:
        if self.isolate is None:
            self.isolate = Isolate(self.timeout_seconds, self.memory_bytes, nested=False, chain="root", evaluator=True)
        return self.isolate

    def evaluate(self, body: str, args_text: str | None) -> dict[str, Any]:
        try:
            ended = self._live().evaluate(body, args_text)
        except IsolateError as error:
            if error.code != "script_syntax":
                self.isolate = None  # closed by the limit it broke
                raise
            return {"done": True, "result": None, "logs": [], "failures": [], "waiting": 0, "chain": None,
                    "error": {"name": "SyntaxError", "message": error.message, "line": error.line,
                              "code": "script_syntax"}}
        if not ended["clean"]:
            self.close()
        return ended["state"]

    def parse_each(self, bodies: list[str]) -> list[dict[str, Any] | None]:
        """Whether each body compiles as the function `evaluate` would make of it, running none of it:
        None, or `{message, line}` (line within the body, when V8 gives one)."""
        isolate = self._live()
        return [isolate.parse(body) for body in bodies]

    def evaluate_each(self, bodies: list[str], args_text: str | None) -> list[dict[str, Any]]:
        """`evaluate` for each body with the same args (one plan's code steps), each timed:
        `{state, started_at, finished_at}`, or `{error: {code, message, line}, ...}` for a broken limit
        (the next body gets a new isolate)."""
        answers: list[dict[str, Any]] = []
        for body in bodies:
            started_at = time.time()
            try:
                answers.append({"state": self.evaluate(body, args_text)})
            except IsolateError as error:
                answers.append({"error": {"code": error.code, "message": error.message, "line": error.line}})
            answers[-1].update(started_at=started_at, finished_at=time.time())
        return answers


class ScriptSession:
    """The root isolate of one script and the isolates of the workflows it nests."""

    def __init__(self, body: str, args_text: str | None, timeout_seconds: float, memory_bytes: int) -> None:
        self.body, self.args_text = body, args_text
        self.timeout_seconds, self.memory_bytes = timeout_seconds, memory_bytes
        self.root = Isolate(timeout_seconds, memory_bytes, nested=False, chain="root")
        self.nested: dict[str, Isolate] = {}   # workflow() call key -> its isolate
        self.owner: dict[str, str] = {}        # call key -> the nested workflow's key ("" = root)
        self.buffer: list[dict[str, Any]] = []  # calls collected but not handed out yet
        self.logs: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.total: float | None = None
        self.spent = 0.0

    def close(self) -> None:
        for isolate in [self.root, *self.nested.values()]:
            isolate.close()
        self.nested.clear()

    def _isolate(self, owner: str) -> Isolate:
        return self.nested[owner] if owner else self.root

    def _adopt(self, owner: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for call in calls:
            self.owner[call["key"]] = owner
        return calls

    def _collect(self, owner: str) -> None:
        """With nested isolates about, calls are collected after every drain, so each keeps its owner."""
        self.buffer += self._adopt(owner, self._isolate(owner).call("takeCalls"))

    def _hand_out(self, taken: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out, self.buffer = self.buffer + taken, []
        return out

    def start(self) -> None:
        self.root.start(self.body, self.args_text, "workflow.js")

    def set_budget(self, total: float | None, spent: float) -> None:
        self.total, self.spent = total, spent
        for isolate in [self.root, *self.nested.values()]:
            isolate.call("setBudget", total, spent)

    def take_calls(self) -> list[dict[str, Any]]:
        return self._hand_out(self._adopt("", self.root.call("takeCalls")))

    def step(self, spent: float, key: str, ok: bool, payload: str) -> list[dict[str, Any]]:
        self.spent = spent
        owner = self.owner.get(key, "")
        if not self.nested:  # the common case: one isolate, one host call per result
            return self._hand_out(self._adopt("", self.root.call("step", spent, key, ok, payload, False, None)))
        answered = self._isolate(owner).call("step", spent, key, ok, payload, False, None)
        taken = self._hand_out(self._adopt(owner, answered))
        self._collect(owner)
        if owner:
            self._finish_nested(owner)
        return taken

    def steps(self, results: list[tuple[float, str, bool, str]]) -> list[dict[str, Any]]:
        if results and not self.nested:  # the common case: every result for the root, in one batch
            self.spent = results[-1][0]
            return self._hand_out(self._adopt("", self.root.steps(results)))
        calls: list[dict[str, Any]] = []
        for spent, key, ok, payload in results:
            calls += self.step(spent, key, ok, payload)
        return calls

    def start_nested(self, key: str, body: str, name: str, args: Any, has_args: bool) -> None:
        if self.owner.get(key, "") != "" or key in self.nested:
            raise IsolateError("sandbox_protocol", f"workflow() call {key} is not the root script's")
        if not self.nested:
            self._collect("")  # from now on every isolate's calls are collected as they are made
        isolate = Isolate(self.timeout_seconds, self.memory_bytes, nested=True, chain=key)
        self.nested[key] = isolate
        isolate.call("setBudget", self.total, self.spent)
        try:
            isolate.start(body, json.dumps(args) if has_args else None, f"workflow-{_safe_name(name)}.js")
        except IsolateError as error:
            del self.nested[key]
            if error.code != "script_syntax":
                raise
            self._settle_root(key, False, {"name": "SyntaxError", "message": f"workflow(): {name}: {error.message}"},
                              None)
            return
        self._collect(key)
        self._finish_nested(key)

    def _finish_nested(self, key: str) -> None:
        state = self.nested[key].call("state")
        self.logs += state["logs"]
        self.failures += state["failures"]
        if not state["done"]:
            return
        self.nested.pop(key).close()
        if state["error"] is None:
            self._settle_root(key, True, state["result"], state["chain"])
        else:
            error = state["error"]
            self._settle_root(key, False, {"name": error["name"], "message": error["message"]}, state["chain"])

    def _settle_root(self, key: str, ok: bool, value: Any, chain: str | None) -> None:
        self.buffer += self._adopt("", self.root.call("step", self.spent, key, ok, json.dumps(value), not ok, chain))
        self._collect("")

    def state(self) -> dict[str, Any]:
        for key in list(self.nested):
            self._finish_nested(key)
        state = self.root.call("state")
        state["logs"] = self.logs + state["logs"]
        state["failures"] = self.failures + state["failures"]
        self.logs, self.failures = [], []
        return state


def _task_runner(racer: MiniRacer | None) -> Any:
    """mini-racer's context object when it has the internals `Isolate.steps` drives directly (0.14
    does); None otherwise, and `steps` falls back to one public host call per result."""
    context = getattr(racer, "_ctx", None)
    needed = ("_run_cancelable_mr_task", "_python_to_value_handle", "eval_cancelable", "_dll", "event_loop")
    return context if context is not None and all(hasattr(context, name) for name in needed) else None


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80]


def _syntax_error(text: str, anonymous: bool = False) -> tuple[str, int | None]:
    """V8's report as (message without the location prefix, line)."""
    line = re.search(r"<anonymous>:(\d+)" if anonymous else r"(?:workflow[\w.-]*\.js|<anonymous>):(\d+)", text)
    first = text.strip().splitlines()[-1] if text.strip() else "syntax error"
    for candidate in text.splitlines():
        if "Error" in candidate:
            first = candidate.strip()
            break
    first = re.sub(r"^(?:workflow[\w.-]*\.js|<anonymous>):\d+:\s*", "", first)
    return first, int(line.group(1)) if line else None
