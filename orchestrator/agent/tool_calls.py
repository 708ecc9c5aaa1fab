"""A turn's tool calls: each a journaled step, gated by the project's approval policy first.

    for each call of the turn, in order:
        gate: Proceed (run it) | Answer(result) (record this instead: denied, not available, repeated)
              | Wait (a person must decide; the run parks here)
        step "turn/N/tool/i": begin opens its span; the tool runs; its message, span end and (for the
            last call) the turn's span end are written with the result, in one transaction
        after a crash: a read-only call runs again, a mutating one is recorded as interrupted
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from sqlalchemy.orm import Session

from orchestrator.domain.enums import ApprovalStatus, MessageRole, StepStatus
from orchestrator.domain.keys import tool_key
from orchestrator.lifecycle import RunContext
from orchestrator.llm.client import ToolCallRequest
from orchestrator.store import approvals, runs
from orchestrator.store import sessions as chat_sessions
from orchestrator.tools.base import ToolContext, ToolInputError, ToolResult
from orchestrator.tools.policy import decide
from orchestrator.tools.registry import TOOLS, parse_arguments, run_tool
from orchestrator.tracing import spans as trace


@dataclass(frozen=True)
class Proceed:
    """Run the call."""


@dataclass(frozen=True)
class Answer:
    """Record `result` as the call's result instead of running it."""

    result: ToolResult


@dataclass(frozen=True)
class Wait:
    """A person must decide first: the run parks until they do."""


GateDecision = Proceed | Answer | Wait


@dataclass(frozen=True)
class TurnTools:
    """What the tool calls of a turn run with."""

    tool_context: ToolContext
    policy: dict[str, Any] | None
    allowed: tuple[str, ...]


def run_tool_calls(context: RunContext, turn: int, calls: list[ToolCallRequest], tools: TurnTools,
                   repeated: bool = False) -> bool:
    """Run the turn's tool calls in order. True when one waits for approval (the run parks there).
    `repeated`: the same calls as the turn before; they are answered with a reminder, not run again."""
    closed = False
    for index, call in enumerate(calls):
        gate = gate_for(context, turn, index, call, tools, repeated)
        if isinstance(gate, Wait):
            return True
        last = index == len(calls) - 1

        def record(session: Session, output: dict[str, Any], call: ToolCallRequest = call, index: int = index,
                   last: bool = last) -> None:
            nonlocal closed
            record_tool_message(session, context, turn, index, call, output)
            if last:
                trace.close_turn(session, context.run, turn)
                closed = True

        def begin(session: Session, call: ToolCallRequest = call, index: int = index) -> None:
            trace.start_tool_span(session, context.run, turn, index, call)

        def interrupted(call: ToolCallRequest = call) -> dict[str, Any]:
            return interrupted_result(call).to_dict()

        mutating = call.name in TOOLS and TOOLS[call.name].mutating
        context.step(
            tool_key(turn, index), _tool_body(call, tools.tool_context, gate, tool_key(turn, index)), kind="tool_call",
            input={"tool_call_id": call.id, "name": call.name, "arguments": call.arguments},
            begin=begin, record=record, interrupted=interrupted if mutating else None)
    if not closed:  # the last call's result was recorded by an earlier holder
        with context.db.transaction() as session:
            trace.close_turn(session, context.run, turn)
    return False


def gate_for(context: RunContext, turn: int, index: int, call: ToolCallRequest, tools: TurnTools,
             repeated: bool) -> GateDecision:
    if repeated:
        return Answer(ToolResult(
            content=f"not run: {call.name} with these arguments is exactly your previous call, and its result is "
                    "above. Use that result: answer now, or do something different.", is_error=True,
            data={"repeated": True}))
    if call.name in TOOLS and call.name not in tools.allowed:
        return Answer(ToolResult(
            content=f"error: {call.name} is not available to this agent; its tools are {', '.join(tools.allowed)}",
            is_error=True))
    return gate_call(context, tool_key(turn, index), call, tools.policy, tools.tool_context.root)


def gate_call(context: RunContext, key: str, call: ToolCallRequest,
              policy: dict[str, Any] | None, root: Path) -> GateDecision:
    """What the approval policy (and, for `ask`, a person) says about the call."""
    recorded = context.steps.get(key)
    if recorded is not None and recorded.status != StepStatus.STARTED:
        return Proceed()  # already recorded; the step returns it
    try:
        arguments = parse_arguments(call.name, call.arguments)
    except ToolInputError:
        return Proceed()  # the tool step itself reports what is wrong with the call
    decision, rule = decide(policy, call.name, arguments, root=root)
    if decision == "allow":
        return Proceed()
    if decision == "deny":
        return Answer(ToolResult(content=f"denied: the project's approval policy does not allow this {call.name} "
                                         f"call (rule {rule}). Do not retry it; choose another way or ask the user.",
                                 is_error=True, data={"denied": True, "rule": rule}))
    with context.db.transaction() as session:
        runs.check_fence(session, context.lease)
        approval = approvals.load_for_step(session, context.run.id, key) or approvals.request_approval(
            session, context.run, key, call.name, arguments, rule)
    if approval.status == ApprovalStatus.PENDING:
        return Wait()
    if approval.status == ApprovalStatus.DENIED:
        return Answer(ToolResult(content=f"denied by the user: {approval.reason or 'no reason given'}. "
                                         "Do not retry this call.", is_error=True, data={"denied": True}))
    return Proceed()


def _tool_body(call: ToolCallRequest, tool_context: ToolContext, gate: GateDecision,
               key: str) -> Callable[[], dict[str, Any]]:
    """The tool itself; its span was opened with the journal's `started` (RunContext.step's `begin`)."""
    def body() -> dict[str, Any]:
        if isinstance(gate, Answer):
            return gate.result.to_dict()
        return run_tool(call.name, call.arguments, replace(tool_context, call_key=key)).to_dict()

    return body


def interrupted_result(call: ToolCallRequest) -> ToolResult:
    return ToolResult(content=f"interrupted: the worker running this {call.name} call stopped before it finished, "
                              "so it may or may not have taken effect. Check the current state before repeating it.",
                      is_error=True, data={"interrupted": True})


def record_tool_message(session: Session, context: RunContext, turn: int, index: int, call: ToolCallRequest,
                        output: dict[str, Any]) -> None:
    result = ToolResult.from_dict(output)
    trace.finish_tool_span(session, context.run, turn, index, result)
    parts: list[dict[str, Any]] = [{"type": "tool_result", "tool_call_id": call.id, "name": call.name,
                                    "content": result.content, "is_error": result.is_error,
                                    "interrupted": bool(result.data.get("interrupted"))}]
    if result.diff:
        parts.append({"type": "diff", "path": result.data.get("path"), "diff": result.diff})
    chat_sessions.add_message(session, context.run.session_id, MessageRole.TOOL, parts, run_id=context.run.id)
