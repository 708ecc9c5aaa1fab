"""Running a flow's JavaScript: `code` steps and guards (`when`, switch cases), in the workflow sandbox.

    evaluate_code(code, input, steps)         -> CodeResult(ok, value | error)
    evaluate_codes({step: code}, input, steps) -> {step: CodeResult}   (one plan's, one request)
    parse_javascript([(text, is_code)])        -> [None | (line, message)]  (validation; runs nothing)
    evaluate_guards(expressions, input, steps) -> (bool, …) | GuardFailure

User JavaScript never runs in a web or worker process (DESIGN §3.5-3.6): each evaluation is one
script in a pooled sandbox *process* with the workflow engine's time and memory limits, the clock and
randomness refused (so a replayed tick takes the same path). A tick passes one `evaluator_for(limits)`
to all its evaluations: one isolate for all of them, each script a function of its own arguments in
a realm frozen deep, put back after each (`isolate.Evaluator`). `input` is the run's input and `steps`
the step views (`steps.<id>.result`, `.state`, `.error`, `.attempt`), both frozen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Mapping

from orchestrator.flows.expressions import check_expression
from orchestrator.flows.scheduler import GuardFailure
from orchestrator.workflow.sandbox import Evaluator, SandboxError

PREAMBLE = "const input = args.input, steps = args.steps;\nreturn await (async () => {\n"
PREAMBLE_LINES = PREAMBLE.count("\n")


@dataclass(frozen=True)
class Limits:
    timeout_seconds: float = 2.0
    memory_bytes: int = 128 * 1024 * 1024
    pool_size: int | None = None


@dataclass(frozen=True)
class CodeResult:
    ok: bool
    value: Any = None
    error: dict[str, Any] | None = None
    started_at: datetime | None = None  # when the sandbox began and finished it (the step's timing)
    finished_at: datetime | None = None


def _body(code: str) -> str:
    """An expression is returned; a function body (statements, `return …;`) runs as it is."""
    inner = f"return (\n{code}\n);" if not check_expression(code) else code
    return PREAMBLE + inner + "\n})();"


def _user_line(line: int | None, expression: bool) -> int | None:
    """A line of the generated script as a line of the user's code."""
    if line is None:
        return None
    shifted = line - PREAMBLE_LINES - (1 if expression else 0)
    return shifted if shifted >= 1 else None


def _syntax(state: dict[str, Any]) -> SandboxError | None:
    """A syntax error comes back as the script's state; it is reported as the sandbox's error."""
    problem = state.get("error") or {}
    if problem.get("code") == "script_syntax":
        return SandboxError("script_syntax", problem.get("message") or "syntax error", problem.get("line"))
    return None


def _run(body: str, scope: dict[str, Any], limits: Limits, evaluator: Evaluator | None) -> dict[str, Any]:
    if evaluator is None:
        with evaluator_for(limits) as own:
            return _run(body, scope, limits, own)
    state = evaluator.evaluate(body, scope)
    syntax = _syntax(state)
    if syntax is not None:
        raise syntax
    return state


def evaluator_for(limits: Limits) -> Evaluator:
    """A sandbox evaluator with the flow's limits: a tick opens one and evaluates all its scripts in it."""
    return Evaluator(timeout_seconds=limits.timeout_seconds, memory_bytes=limits.memory_bytes,
                     pool_size=limits.pool_size)


def evaluate_code(code: str, flow_input: Any, steps: Mapping[str, Any], limits: Limits,
                  evaluator: Evaluator | None = None) -> CodeResult:
    """A code step's value, or why it has none (the message and the line in the step's code), timed."""
    return evaluate_codes({"": code}, flow_input, steps, limits, evaluator)[""]


def evaluate_codes(codes: Mapping[str, str], flow_input: Any, steps: Mapping[str, Any], limits: Limits,
                   evaluator: Evaluator | None = None) -> dict[str, CodeResult]:
    """`evaluate_code` for each of one plan's code steps (they see the same input and steps), in one
    request to the sandbox process; each timed there."""
    if evaluator is None:
        with evaluator_for(limits) as own:
            return evaluate_codes(codes, flow_input, steps, limits, own)
    names = list(codes)
    timed = evaluator.evaluate_each([_body(codes[name]) for name in names], {"input": flow_input, "steps": dict(steps)})
    return {name: replace(_outcome(codes[name], one.state, one.error), started_at=one.started_at,
                          finished_at=one.finished_at) for name, one in zip(names, timed)}


def _outcome(code: str, state: dict[str, Any] | None, error: SandboxError | None) -> CodeResult:
    expression = not check_expression(code)
    error = error or (_syntax(state) if state is not None else None)
    if error is not None or state is None:
        assert error is not None
        return CodeResult(False, error={"code": error.code, "message": error.message,
                                        "line": _user_line(error.line, expression)})
    if not state["done"]:
        return CodeResult(False, error={"code": "code_waits", "retryable": False,
                                        "message": "the code awaits something that never comes (agent() and "
                                                   "workflow() are not available in a code step)"})
    if state["error"] is not None:
        problem = state["error"]
        return CodeResult(False, error={"code": problem.get("code") or "code_error",
                                        "message": f"{problem.get('name')}: {problem.get('message')}",
                                        "line": _user_line(problem.get("line"), expression)})
    return CodeResult(True, value=json.loads(json.dumps(state["result"])))


def parse_javascript(texts: list[tuple[str, bool]], limits: Limits = Limits()) -> list[tuple[int | None, str] | None]:
    """Whether each text compiles as the sandbox will run it (`(text, True)` a code step, `(text,
    False)` a guard or a switch case), in one request to a sandbox process, running none of it: None,
    or (the line in the text when V8 gives one, V8's message). Answers are kept per text."""
    missing = list(dict.fromkeys(item for item in texts if item not in _PARSED))
    if missing:
        bodies = [_body(text) if code else f"return !!(\n{text}\n);" for text, code in missing]
        with evaluator_for(limits) as evaluator:
            answers = evaluator.parse_each(bodies)
        for (text, code), answer in zip(missing, answers):
            if len(_PARSED) >= PARSED_KEPT:
                _PARSED.pop(next(iter(_PARSED)))
            _PARSED[(text, code)] = None if answer is None else (_parsed_line(text, code, answer["line"]),
                                                                 answer["message"])
    return [_PARSED[item] for item in texts]


def _parsed_line(text: str, code: bool, line: int | None) -> int | None:
    """A parse error's line in the text (an unclosed bracket is reported past its end: the last line)."""
    shifted = _user_line(line, not check_expression(text)) if code else (line - 1 if line else None)
    return min(max(shifted, 1), text.count("\n") + 1) if shifted else None


PARSED_KEPT = 4096
_PARSED: dict[tuple[str, bool], tuple[int | None, str] | None] = {}


def evaluate_guards(expressions: tuple[str, ...], flow_input: Any, steps: Mapping[str, Any],
                    limits: Limits, evaluator: Evaluator | None = None) -> tuple[bool, ...] | GuardFailure:
    """The truth value of each expression (JavaScript truthiness), in one sandbox script; the first
    that throws fails the step with its message."""
    parts = [f"(() => {{ try {{ return {{ok: true, value: !!(\n{text}\n)}}; }} catch (error) {{ return "
             f"{{ok: false, index: {index}, message: String(error && error.message || error)}}; }} }})()"
             for index, text in enumerate(expressions)]
    body = PREAMBLE + "return [" + ",\n".join(parts) + "];\n})();"
    try:
        state = _run(body, {"input": flow_input, "steps": dict(steps)}, limits, evaluator)
    except SandboxError as error:
        return GuardFailure(f"a guard could not be evaluated: {error.message}")
    if state["error"] is not None or not state["done"]:
        message = (state["error"] or {}).get("message", "it did not finish")
        return GuardFailure(f"a guard could not be evaluated: {message}")
    values = []
    for index, answer in enumerate(state["result"]):
        if not answer.get("ok"):
            return GuardFailure(f"expression {index + 1} ({expressions[index][:80]!r}) threw: {answer.get('message')}")
        values.append(bool(answer["value"]))
    return tuple(values)
