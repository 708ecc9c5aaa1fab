"""A workflow script in its own V8 isolate, in a sandbox process, driven one step at a time.

    sandbox = Sandbox(script, args)          # a pooled sandbox process opens an isolate (prelude, limits)
    sandbox.start()                          # compile and start the body; run until it waits
    sandbox.take_calls()                     # agent() calls made so far: [{key, prompt, options}]
    sandbox.step(spent, key, ok, payload)    # one result in (the calls made before it come back);
                                             # the isolate drains before this returns
    sandbox.state()                          # done / result / error (message and line) / logs / failures
    sandbox.close()                          # the process goes back to its pool

    evaluator = Evaluator()                  # short scripts in turn in one isolate (flow code steps)
    evaluator.evaluate(body, args)           # one of them, run to its end: its state
    evaluator.evaluate_each(bodies, args)    # several with the same args in one request, each timed
    evaluator.parse_each(bodies)             # whether each compiles, running none of it

The isolate lives in a sandbox process (`sandbox_process`, `isolate_process`), never in the caller:
a V8 fatal error, a segfault or an out-of-memory kill ends that process only, and the call raises
`SandboxError("script_crashed")`. Time is bounded twice: V8's own timeout on every host call and
the barrier after it (`isolate`), and the caller's deadline on every request, which kills the
process. One isolate per tick (an Evaluator's: one per flow tick), never shared; the process is
reused. After any error the sandbox is closed and later calls raise `sandbox_closed`.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Self

from orchestrator.workflow.sandbox_process import NOT_REUSED, SandboxError, SandboxProcess, pool_for
from orchestrator.workflow.script import WorkflowScript

logger = logging.getLogger(__name__)
OPEN_SECONDS = 30.0

__all__ = ["Evaluator", "Nested", "Sandbox", "SandboxError", "Settled", "Timed", "replay", "run_to_completion"]


class _Held:
    """A pooled sandbox process held by one caller until `close`, and its requests."""

    def __init__(self, timeout_seconds: float, memory_bytes: int, pool_size: int | None) -> None:
        self.timeout_seconds, self.memory_bytes = timeout_seconds, memory_bytes
        # A request may run a host call, its barrier, and a nested workflow's end settling the root:
        # V8 stops each within timeout_seconds; the deadline only catches what V8 misses.
        self._deadline_seconds = 4 * timeout_seconds + 5
        self._pool = pool_for(memory_bytes, pool_size)
        self._process: SandboxProcess | None = None

    @property
    def process_id(self) -> int | None:
        """The sandbox process's pid while this holds it (for operators and tests)."""
        return self._process.pid if self._process is not None else None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        reusable = True
        try:
            process.request({"op": "close"}, self._deadline_seconds)
        except SandboxError:
            reusable = False
        self._pool.release(process, reusable)

    def _request(self, message: dict[str, Any], seconds: float | None = None) -> Any:
        process = self._process
        if process is None:
            raise SandboxError("sandbox_closed", "the sandbox was closed after an earlier error")
        try:
            return process.request(message, seconds or self._deadline_seconds)
        except SandboxError as error:
            # the child dropped its isolates; a process that broke a limit is not reused
            self._process = None
            self._pool.release(process, error.code not in NOT_REUSED)
            raise


class Evaluator(_Held):
    """Short scripts one after another in one isolate of one sandbox process (a flow tick's code steps
    and guards; `isolate.Evaluator` says what keeps them apart). The process is taken at the first
    script; after a script that broke a limit the next one takes a process and an isolate afresh."""

    def __init__(self, *, timeout_seconds: float = 2.0, memory_bytes: int = 128 * 1024 * 1024,
                 pool_size: int | None = None) -> None:
        super().__init__(timeout_seconds, memory_bytes, pool_size)

    def _open(self) -> None:
        if self._process is None:
            self._process = self._pool.acquire()
            self._request({"op": "evaluator", "timeout": self.timeout_seconds, "memory": self.memory_bytes},
                          OPEN_SECONDS)

    def evaluate(self, body: str, args: Any) -> dict[str, Any]:
        """Run `body` (a function body of `args`) to its end: done / result / error / logs, like `state`."""
        self._open()
        return self._request({"op": "evaluate", "body": body, "args_text": json.dumps(args)})

    def parse_each(self, bodies: list[str]) -> list[dict[str, Any] | None]:
        """Whether each body compiles, running none of it: None, or `{message, line}` (isolate.Isolate.parse)."""
        if not bodies:
            return []
        self._open()
        return self._request({"op": "parse_each", "bodies": bodies})

    def evaluate_each(self, bodies: list[str], args: Any) -> list[Timed]:
        """`evaluate` for each body with the same args, in one round trip; each outcome timed by the
        sandbox process. A limit broken ends that body only; if the process dies, each body is tried
        again on its own, so the one that killed it gets the error and the others their states."""
        if not bodies:
            return []
        self._open()
        deadline = self._deadline_seconds * len(bodies)
        try:
            answers = self._request({"op": "evaluate_each", "bodies": bodies, "args_text": json.dumps(args)}, deadline)
        except SandboxError:
            return [self._timed_one(body, args) for body in bodies]
        return [Timed(answer.get("state"), _error_of(answer.get("error")), _stamp(answer["started_at"]),
                      _stamp(answer["finished_at"])) for answer in answers]

    def _timed_one(self, body: str, args: Any) -> "Timed":
        started_at = datetime.now(timezone.utc)
        try:
            state, error = self.evaluate(body, args), None
        except SandboxError as broke:
            state, error = None, broke
        return Timed(state, error, started_at, datetime.now(timezone.utc))


@dataclass(frozen=True)
class Timed:
    """One body's outcome from `Evaluator.evaluate_each`: its state, or the limit it broke; when it ran."""

    state: dict[str, Any] | None
    error: SandboxError | None
    started_at: datetime
    finished_at: datetime


def _error_of(found: dict[str, Any] | None) -> SandboxError | None:
    return SandboxError(found["code"], found["message"], found.get("line")) if found else None


def _stamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


class Sandbox(_Held):
    def __init__(self, script: WorkflowScript, args: Any = None, *, timeout_seconds: float = 2.0,
                 memory_bytes: int = 128 * 1024 * 1024, pool_size: int | None = None) -> None:
        super().__init__(timeout_seconds, memory_bytes, pool_size)
        self.script = script
        self.args = args
        self._process = self._pool.acquire()
        self._request({"op": "open", "body": script.body, "args_text": None if args is None else json.dumps(args),
                       "timeout": timeout_seconds, "memory": memory_bytes}, OPEN_SECONDS)

    def start(self) -> None:
        """Compile and start the body: a syntax error is reported before anything runs."""
        self._request({"op": "start"})

    def take_calls(self) -> list[dict[str, Any]]:
        return self._request({"op": "take_calls"})

    def step(self, spent: float, key: str, ok: bool, payload: str) -> list[dict[str, Any]]:
        """Settle one call (see prelude `step`); returns the calls made before it, during the last drain."""
        return self._request({"op": "step", "spent": spent, "key": key, "ok": ok, "payload": payload})

    def steps(self, results: list[tuple[float, str, bool, str]]) -> list[dict[str, Any]]:
        """`step` for each result in order, in one round trip; the calls each returned, concatenated."""
        if not results:
            return []
        return self._request({"op": "steps", "results": results})

    def start_nested(self, key: str, script: WorkflowScript, args: Any) -> None:
        """Run a workflow() call's script in an isolate of its own; it settles the call when it ends."""
        self._request({"op": "start_nested", "key": key, "body": script.body, "name": script.name,
                       "args": args, "has_args": args is not None})

    def set_budget(self, total: float | None, spent: float) -> None:
        self._request({"op": "set_budget", "total": total, "spent": spent})

    def state(self) -> dict[str, Any]:
        return self._request({"op": "state"})


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
        # What a step returns goes to the back of the queue, so the steps for the calls queued now can
        # go in one round trip to the sandbox process, in order: the same order as one at a time.
        batch: list[tuple[float, str, bool, str]] = []
        answered: list[dict[str, Any]] = []
        while queue:
            call = queue.popleft()
            outcome = settle(call)
            if outcome is None:
                unsettled.append(call)
            elif isinstance(outcome, Nested):
                answered += sandbox.steps(batch)
                batch = []
                sandbox.start_nested(call["key"], outcome.script, call.get("args"))
            else:
                spent += outcome.tokens
                batch.append((spent, call["key"], outcome.ok,
                              json.dumps(outcome.value) if outcome.ok else outcome.message))
        queue.extend(answered + sandbox.steps(batch))


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
