"""A workflow script in its own V8 isolate (mini-racer), driven one step at a time.

    sandbox = Sandbox(script, args)          # new isolate: prelude (guards, primitives), memory limit
    sandbox.start()                          # compile and start the body; run until it waits
    sandbox.take_calls()                     # agent() calls made so far: [{key, prompt, options}]
    sandbox.step(spent, key, ok, payload)    # one result in (the calls made before it come back);
                                             # the isolate drains before this returns
    sandbox.state()                          # done / result / error (message and line) / logs / failures

Code after an `await` runs on mini-racer's loop after an eval has returned, outside that eval's
timeout. So every step is followed by a barrier: a trivial eval that can only run once the isolate
is idle, with the sync-execution timeout. If it times out (an endless loop, before or after an
await) or memory runs out, the isolate is closed, which stops it, and the run fails with
`SandboxError`; the worker process carries on. One isolate per tick, never shared.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections import deque
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable

from py_mini_racer import JSEvalException, JSOOMException, JSTimeoutException, MiniRacer

from orchestrator.workflow.script import WorkflowScript

logger = logging.getLogger(__name__)
PRELUDE = resources.files("orchestrator.workflow").joinpath("prelude.js").read_text()


class SandboxError(Exception):
    """The script broke a limit (time, memory) or could not be compiled; `line` when known."""

    def __init__(self, code: str, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.line = code, message, line


class Sandbox:
    def __init__(self, script: WorkflowScript, args: Any = None, *, timeout_seconds: float = 2.0,
                 memory_bytes: int = 128 * 1024 * 1024) -> None:
        self.script = script
        self.args = args
        self.timeout_seconds = timeout_seconds
        # Every host interaction is a timed eval (calls through JS function handles cannot be timed
        # out), so the host object needs a global name; a random one the script has no reason to use.
        self._host = f"__boocode_host_{secrets.token_hex(8)}"
        self._context: MiniRacer | None = MiniRacer()
        self._context.set_hard_memory_limit(memory_bytes)
        self._eval(f"Object.defineProperty(globalThis, {json.dumps(self._host)}, {{value: {PRELUDE}\n, "
                   "writable: false, configurable: false, enumerable: false});\n//# sourceURL=boocode-prelude.js")

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._context is not None:
            self._context.close()
            self._context = None

    def _eval(self, code: str) -> Any:
        if self._context is None:
            raise SandboxError("sandbox_closed", "the sandbox was closed after an earlier error")
        try:
            result = self._context.eval(code, timeout_sec=self.timeout_seconds)
            self._context.eval("0", timeout_sec=self.timeout_seconds)  # barrier: the isolate is idle again
            return result
        except JSTimeoutException:
            self.close()
            raise SandboxError("script_timeout", f"the script ran for more than {self.timeout_seconds}s without "
                               "waiting (an endless loop?); synchronous work between awaits is limited") from None
        except (JSOOMException, JSEvalException) as error:
            out_of_memory = isinstance(error, JSOOMException) or self._context.was_hard_memory_limit_reached()
            if not out_of_memory:
                raise
            self.close()
            raise SandboxError("script_memory", "the script used more memory than its sandbox allows") from None

    def _call(self, method: str, *arguments: Any) -> Any:
        return self._eval(f"{self._host}.{method}({', '.join(json.dumps(argument) for argument in arguments)})")

    def start(self) -> None:
        """Compile and start the body in one eval: a syntax error is reported before anything runs."""
        code = (f"{self._host}.start(async function () {{{self.script.body}\n}}, {json.dumps(json.dumps(self.args))});"
                "\n//# sourceURL=workflow.js")
        try:
            self._eval(code)
        except JSEvalException as error:
            self.close()
            message, line = _syntax_error(str(error))
            raise SandboxError("script_syntax", message, line) from None

    def take_calls(self) -> list[dict[str, Any]]:
        return json.loads(self._call("takeCalls"))

    def step(self, spent: float, key: str, ok: bool, payload: str) -> list[dict[str, Any]]:
        """Settle one call (see prelude `step`); returns the calls made before it, during the last drain."""
        return json.loads(self._call("step", spent, key, ok, payload))

    def start_nested(self, key: str, script: WorkflowScript, args: Any) -> None:
        code = (f"{self._host}.startNested({json.dumps(key)}, async function (args, workflow) {{{script.body}\n}}, "
                f"{json.dumps(json.dumps(args))});\n//# sourceURL=workflow-{_safe_name(script.name)}.js")
        try:
            self._eval(code)
        except JSEvalException as error:
            message, line = _syntax_error(str(error))
            raise SandboxError("script_syntax", f"{script.name}: {message}", line) from None

    def set_budget(self, total: float | None, spent: float) -> None:
        self._call("setBudget", total, spent)

    def state(self) -> dict[str, Any]:
        return json.loads(self._call("state"))


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80]


def _syntax_error(text: str) -> tuple[str, int | None]:
    """V8's report as (message without the location prefix, line)."""
    line = re.search(r"(?:workflow[\w.-]*\.js|<anonymous>):(\d+)", text)
    first = text.strip().splitlines()[-1] if text.strip() else "syntax error"
    for candidate in text.splitlines():
        if "Error" in candidate:
            first = candidate.strip()
            break
    first = re.sub(r"^(?:workflow[\w.-]*\.js|<anonymous>):\d+:\s*", "", first)
    return first, int(line.group(1)) if line else None


@dataclass(frozen=True)
class Settled:
    """A journaled outcome for one call: `ok` resolves with `value`; otherwise the call throws `message`.
    `tokens` count toward `budget.spent()` from that point of the replay on."""

    ok: bool
    value: Any = None
    message: str = ""
    tokens: float = 0


@dataclass(frozen=True)
class Nested:
    """Start a nested `workflow()` call with this script."""

    script: WorkflowScript


def replay(sandbox: "Sandbox", settle: Callable[[dict[str, Any]], Settled | Nested | None]) -> list[dict[str, Any]]:
    """Serve calls from `settle` one at a time, in the order the script made them, letting the isolate
    drain after each, until no call it knows can be settled. Returns the calls left unsettled (new
    ones to dispatch, or ones still running), in the order they were made.

    The order is what makes keys independent of completion timing: the code that runs while the
    isolate drains after call K is exactly K's continuation, so it chains onto K.
    """
    spent = 0.0
    queue: deque[dict[str, Any]] = deque(sandbox.take_calls())
    unsettled: list[dict[str, Any]] = []
    while True:
        if not queue:
            queue.extend(sandbox.take_calls())
            if not queue:
                return unsettled
        call = queue.popleft()
        outcome = settle(call)
        if outcome is None:
            unsettled.append(call)
        elif isinstance(outcome, Nested):
            try:
                sandbox.start_nested(call["key"], outcome.script, call.get("args"))
            except SandboxError as error:
                if error.code != "script_syntax":
                    raise
                queue.extend(sandbox.step(spent, call["key"], False, f"workflow(): {error.message}"))
        else:
            spent += outcome.tokens
            queue.extend(sandbox.step(spent, call["key"], outcome.ok,
                                      json.dumps(outcome.value) if outcome.ok else outcome.message))


def run_to_completion(script: WorkflowScript, args: Any, answer: Callable[[dict[str, Any]], Any], *,
                      timeout_seconds: float = 2.0, budget: float | None = None,
                      scripts: dict[str, WorkflowScript] | None = None) -> dict[str, Any]:
    """Drive a script with `answer(call) -> value` for every agent() call (tests, dry runs); an
    exception from `answer` makes that call throw. Each answered call costs 1 toward the budget.
    `scripts` serves nested workflow() calls by name."""
    seen: list[dict[str, Any]] = []

    def settle(call: dict[str, Any]) -> Settled | Nested:
        seen.append(call)
        if call.get("kind") == "workflow":
            name = call["spec"].get("name") or call["spec"].get("scriptPath")
            if scripts is None or name not in scripts:
                return Settled(False, message=f"workflow(): no workflow named {name!r}")
            return Nested(scripts[name])
        try:
            return Settled(True, answer(call), tokens=1)
        except Exception as error:  # an agent that failed: its promise rejects
            return Settled(False, message=str(error))

    with Sandbox(script, args, timeout_seconds=timeout_seconds) as sandbox:
        sandbox.set_budget(budget, 0)
        sandbox.start()
        unsettled = replay(sandbox, settle)
        state = sandbox.state()
        return {**state, "calls": seen, "unsettled": unsettled}
