"""One agent turn per task: a model call, then its tool calls, each journaled; then the next task.

    run_turn(context):
        an earlier run in this session is unfinished      -> defer (it wakes us when it finishes)
        turns = finished model calls in the journal
        the last turn asked for tools not all recorded    -> finish those tools, continue
        the last turn was a final answer                  -> complete (a crash came before the outcome)
        turns == max_steps                                -> record why, fail with step_cap_reached
        step "turn/N/model": stream the model (deltas as events); the assistant message is written
                             in the same transaction as the journal entry
        model failed                                      -> fail; the message carries the error
        no tool calls                                     -> complete with the answer
        for each tool call: step "turn/N/tool/i", its tool message written with the result;
            after a crash a read-only call runs again, a mutating one is recorded as interrupted
        continue: the lease is handed back and the next turn is a new task
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from jsonschema import Draft202012Validator
from sqlalchemy.orm import Session

from orchestrator.agent import trace, worktree
from orchestrator.agent.host import SubagentHost
from orchestrator.agent.prompt import image_digests, render_messages, system_prompt
from orchestrator.agent.streaming import DeltaPublisher
from orchestrator.agent.types import discover_agent_types
from orchestrator.domain.enums import MessageRole, RunStatus, StepStatus
from orchestrator.errors import ConfigurationError
from orchestrator.lifecycle import Continue, Defer, Finish, Handler, Park, RunContext, RunOutcome
from orchestrator.llm.client import ModelClient, ModelResult, Provider, ToolCallRequest
from orchestrator.providers import resolve_provider, server_provider
from orchestrator.sandbox import Sandbox
from orchestrator.settings import Settings
from orchestrator.store import approvals, blobs, journal, runs, subagents
from orchestrator.store import sessions as chat_sessions
from orchestrator.store.events import append_event
from orchestrator.store.models import Blob, Project
from orchestrator.tools.base import ToolContext, ToolInputError, ToolResult
from orchestrator.tools.policy import decide, wants_network
from orchestrator.tools.registry import CORE_TOOLS, TOOLS, parse_arguments, run_tool, tool_schemas

MODEL_STEP = re.compile(r"^turn/(\d+)/model$")


@dataclass(frozen=True)
class AgentConfig:
    provider: Provider | None
    max_steps: int = 25
    max_attempts: int = 4
    timeout_seconds: float = 120.0
    sandbox: Sandbox = Sandbox()
    secret_key: str | None = field(default=None, repr=False)
    subagent_limits: subagents.Limits = subagents.Limits(server=8, per_user=4)

    @classmethod
    def from_settings(cls, settings: Settings) -> "AgentConfig":
        return cls(provider=server_provider(settings), max_steps=settings.agent_max_steps, max_attempts=settings.model_max_attempts,
                   timeout_seconds=settings.model_timeout_seconds, sandbox=Sandbox.from_settings(settings),
                   secret_key=settings.secret_key, subagent_limits=subagents.Limits.from_settings(settings))


_clients: dict[tuple[Any, ...], ModelClient] = {}


def model_client(config: AgentConfig, provider: Provider) -> ModelClient:
    """One client (and connection pool) per endpoint and key per process; created after fork, never shared."""
    key = (os.getpid(), provider.base_url, provider.api_key, config.max_attempts, config.timeout_seconds)
    if key not in _clients:
        _clients[key] = ModelClient(provider, max_attempts=config.max_attempts, timeout=config.timeout_seconds)
    return _clients[key]


def handler_from_settings(settings: Settings) -> Handler:
    """The `agent` and `subagent` kinds' handler (orchestrator/runkinds.py)."""
    return make_agent_handler(AgentConfig.from_settings(settings))


def make_agent_handler(config: AgentConfig) -> Handler:
    def handle(context: RunContext) -> RunOutcome:
        return settle_worktree(context, run_turn(context, config), config.sandbox)

    return handle


def settle_worktree(context: RunContext, outcome: RunOutcome, sandbox: Sandbox) -> RunOutcome:
    """An agent with its own worktree ended: drop the worktree if it changed nothing, else keep it, and
    say which in the result (or the error)."""
    spec = (context.run.input or {}).get("spec") or {}
    if spec.get("isolation") != "worktree" or not isinstance(outcome, Finish):
        return outcome
    with context.db.transaction() as session:
        root = Path(session.get(Project, context.run.project_id).root_path)
    info = worktree.release(root, str(context.run.id), sandbox)
    if outcome.status == RunStatus.COMPLETED and isinstance(outcome.result, dict):
        return replace(outcome, result={**outcome.result, "worktree": info})
    return replace(outcome, error={**(outcome.error or {}), "worktree": info})


SCHEMA_RETRIES = 2


class ProfileError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["message"])
        self.error = error


@dataclass(frozen=True)
class AgentProfile:
    """How this run's agent differs from a chat agent: a child run's `spec` (a workflow's agent() options)
    picks the agent type (prompt and tools), the model and an output schema."""

    provider: Provider
    tools: tuple[str, ...]
    prompt: str = ""
    schema: dict[str, Any] | None = None
    spec: dict[str, Any] = field(default_factory=dict)

    def request_options(self) -> dict[str, Any]:
        """A workflow agent's `effort` goes to the model as `reasoning_effort` (reasoning models use it)."""
        return {"reasoning_effort": self.spec["effort"]} if self.spec.get("effort") else {}

    def system(self, base: str) -> str:
        parts = [base]
        if self.prompt:
            parts.append(self.prompt)
        if self.schema is not None:
            parts.append("Your final answer must be only a JSON value (no prose, no code fence) that validates "
                         f"against this JSON Schema:\n{json.dumps(self.schema, sort_keys=True)}")
        return "\n\n".join(parts)


def agent_profile(run: Any, project: Project, provider: Provider) -> AgentProfile:
    spec = (run.input or {}).get("spec") or {}
    top_level = run.parent_id is None and run.kind == "agent"  # only a chat agent starts background subagents
    tools, prompt, model = tuple(TOOLS) if top_level else CORE_TOOLS, "", spec.get("model")
    if spec.get("agentType"):
        known, _ = discover_agent_types(Path(project.root_path))
        agent_type = known.get(spec["agentType"])
        if agent_type is None:
            raise ProfileError({"code": "unknown_agent_type",
                                "message": f"unknown agentType {spec['agentType']!r}; known: {', '.join(sorted(known))}"})
        tools, prompt, model = agent_type.tools, agent_type.prompt, model or agent_type.model
    if model:
        provider = replace(provider, model=model)
    return AgentProfile(provider=provider, tools=tools, prompt=prompt, schema=spec.get("schema"), spec=spec)


def check_against_schema(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """The answer as JSON (a code fence around it is tolerated) and what is wrong with it, if anything."""
    candidate = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", candidate, re.S)
    if fence:
        candidate = fence.group(1)
    try:
        value = json.loads(candidate)
    except json.JSONDecodeError as error:
        return None, f"it is not JSON ({error.msg} at position {error.pos})"
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda error: list(error.absolute_path))
    if errors:
        return None, "; ".join(f"{'/'.join(map(str, error.absolute_path)) or 'value'}: {error.message}"
                               for error in errors[:3])
    return value, None


def journal_has(context: RunContext, key: str) -> bool:
    with context.db.transaction() as session:
        step = journal.load_step(session, context.run.id, key)
    return step is not None and step.status == StepStatus.FINISHED.value


def feedback_key(turn: int) -> str:
    return f"turn/{turn:04d}/schema_feedback"


def model_key(turn: int) -> str:
    return f"turn/{turn:04d}/model"


def tool_key(turn: int, index: int) -> str:
    return f"turn/{turn:04d}/tool/{index}"


def run_turn(context: RunContext, config: AgentConfig) -> RunOutcome:
    if context.run.kind == subagents.KIND:
        with context.db.transaction() as session:
            admitted = subagents.admit(session, context.run.id, config.subagent_limits)
        if not admitted:  # every slot is taken: back to the queue until a subagent ends and frees one
            return Defer(wake=lambda session: subagents.slot_free_for(
                session, context.run.id, config.subagent_limits))
    with context.db.transaction() as session:
        if runs.earlier_unfinished_run(session, context.run) is not None:  # a follow-up: its turn comes next
            return Defer(wake=lambda session: runs.earlier_unfinished_run(
                session, context.run, lock=True) is None)
        project = session.get(Project, context.run.project_id)
        steps = {step.step_key: step for step in journal.list_steps(session, context.run.id)}
    try:
        provider = resolve_provider(project.provider, config.provider, config.secret_key)
    except ConfigurationError as error:
        return Finish(RunStatus.FAILED, error={"code": "provider_misconfigured", "message": error.problems[0]})
    if provider is None:
        return Finish(RunStatus.FAILED, error={
            "code": "no_model_provider",
            "message": "no model is configured: set the project's provider (boocode project provider), or "
                       "BOOCODE_MODEL_BASE_URL and BOOCODE_MODEL (and BOOCODE_MODEL_API_KEY if the endpoint needs one) "
                       "for the web and worker processes"})
    try:
        profile = agent_profile(context.run, project, provider)
    except ProfileError as error:
        return Finish(RunStatus.FAILED, error=error.error)
    provider = profile.provider
    work_root = Path(project.root_path)
    if profile.spec.get("isolation") == "worktree":  # a workflow agent with its own checkout
        try:
            work_root = worktree.ensure(work_root, str(context.run.id), config.sandbox).path
        except worktree.WorktreeError as error:
            return Finish(RunStatus.FAILED, error={"code": "worktree_failed", "message": str(error)})
    host = SubagentHost(context, work_root, config.subagent_limits) \
        if "spawn_subagent" in profile.tools else None
    tool_context = ToolContext(root=work_root, sandbox=config.sandbox, network=wants_network(project.approval_policy),
                               policy=project.approval_policy,
                               should_stop=lambda: context.keeper.lost is not None, host=host)
    timeout = profile.spec.get("timeoutSeconds")
    if timeout and context.run.started_at is not None and \
            (datetime.now(timezone.utc) - context.run.started_at).total_seconds() > float(timeout):
        return Finish(RunStatus.FAILED, error={
            "code": "agent_timeout", "message": f"the agent ran longer than its timeout of {timeout}s"})

    finished_turns = sorted(int(match.group(1)) for key, step in steps.items()
                            if (match := MODEL_STEP.match(key)) and step.status == StepStatus.FINISHED.value)
    turn = len(finished_turns)
    if turn:
        last = ModelResult.from_dict(steps[model_key(turn - 1)].output)
        retried = feedback_key(turn - 1) in steps and steps[feedback_key(turn - 1)].status == "finished"
        if (last.error is not None or not last.tool_calls) and not retried:
            return conclude(context, turn - 1, last, profile)  # the outcome was not recorded before a crash
        if any(tool_key(turn - 1, index) not in steps or steps[tool_key(turn - 1, index)].status == "started"
               for index in range(len(last.tool_calls))):
            if count_repeats(steps, turn - 1, last) >= MAX_REPEATS:
                return stop_repeating(context, turn - 1, last)
            if run_tool_calls(context, turn - 1, last.tool_calls, tool_context, project.approval_policy,
                              profile.tools, repeated=count_repeats(steps, turn - 1, last) == 1):
                return Park()
            return Continue()
    if turn >= config.max_steps:
        return stop_at_step_cap(context, turn, config.max_steps)

    with context.db.transaction() as session:
        history = chat_sessions.list_history(session, context.run)
        digests = image_digests(history)
        if digests and not provider.vision:
            return Finish(RunStatus.FAILED, error={
                "code": "model_cannot_see_images",
                "message": f"the configured model {provider.model!r} is text-only, so the images were not sent and no "
                           "call was made: use a vision-capable model and set BOOCODE_MODEL_VISION=true, or resend "
                           "the message without images"})
        images = {digest: data_url(blobs.load_blob(session, digest)) for digest in digests}
        trace.open_turn(session, context, turn)
        messages = render_messages(profile.system(system_prompt(project.name, str(work_root))), history, images)
    output = context.step(
        model_key(turn), lambda: call_model(context, config, provider, turn, messages, profile.tools,
                                            profile.request_options(), require_tool=provider.require_tool_first
                                            and turn == 0),
        kind="model_call",
        input={"turn": turn, "model": provider.model},
        record=lambda session, result: record_assistant_message(session, context, turn, result, provider))
    result = ModelResult.from_dict(output)
    if result.error is not None or not result.tool_calls:
        return conclude(context, turn, result, profile)
    repeats = count_repeats(steps, turn, result)
    if repeats >= MAX_REPEATS:
        return stop_repeating(context, turn, result)
    if run_tool_calls(context, turn, result.tool_calls, tool_context, project.approval_policy, profile.tools,
                      repeated=repeats > 0):
        return Park()
    return Continue()


MAX_REPEATS = 2  # the same call once more gets a reminder instead of a result; once more after that stops the run


def _signature(result: ModelResult) -> list[tuple[str, str]]:
    def normal(arguments: str) -> str:
        try:
            return json.dumps(json.loads(arguments or "{}"), sort_keys=True)
        except json.JSONDecodeError:
            return arguments
    return [(call.name, normal(call.arguments)) for call in result.tool_calls]


def count_repeats(steps: dict[str, Any], turn: int, result: ModelResult) -> int:
    """How many turns in a row just before `turn` made exactly the same tool calls."""
    signature, repeats = _signature(result), 0
    for earlier in range(turn - 1, -1, -1):
        step = steps.get(model_key(earlier))
        if step is None or step.status != StepStatus.FINISHED.value or \
                _signature(ModelResult.from_dict(step.output)) != signature:
            break
        repeats += 1
    return repeats


def stop_repeating(context: RunContext, turn: int, result: ModelResult) -> RunOutcome:
    call = result.tool_calls[0]
    return stop_run(context, f"turn/{turn:04d}/repeating", {
        "code": "model_repeating",
        "message": f"Stopped: the model made the same call {call.name}({call.arguments}) {MAX_REPEATS + 1} times in "
                   "a row without using its result, so it was not making progress. A larger model may manage this "
                   "task; or send a follow-up that says what to do next."}, turn=turn)


def data_url(blob: Blob) -> str:
    return f"data:{blob.media_type};base64,{base64.b64encode(blob.data).decode()}"


def conclude(context: RunContext, turn: int, result: ModelResult, profile: "AgentProfile") -> RunOutcome:
    """A final answer or a failed model call ends the run; close its turn and run spans first.

    With a schema (a workflow's `agent(..., {schema})`) the answer must be JSON that validates: an
    invalid one is fed back as a user message and the agent tries again, up to SCHEMA_RETRIES times."""
    failed = result.error is not None
    outcome: dict[str, Any] = {"text": result.text, "turns": turn + 1}
    if not failed and profile.schema is not None:
        value, problem = check_against_schema(result.text, profile.schema)
        if problem is None:
            outcome["value"] = value
        else:
            retries = sum(1 for index in range(turn) if journal_has(context, feedback_key(index)))
            if retries < SCHEMA_RETRIES:
                feedback = (f"Your answer does not match the required JSON Schema: {problem}. Answer again with only "
                            "the JSON value, no prose and no code fence.")
                context.step(feedback_key(turn), lambda: {"text": feedback}, kind="schema_feedback",
                             record=lambda session, output: chat_sessions.add_message(
                                 session, context.run.session_id, MessageRole.USER,
                                 [{"type": "text", "text": output["text"]}], run_id=context.run.id))
                with context.db.transaction() as session:
                    trace.close_turn(session, context, turn)
                return Continue()
            error = {"code": "schema_invalid",
                     "message": f"the agent's answer did not match the schema after {SCHEMA_RETRIES + 1} tries: {problem}"}
            with context.db.transaction() as session:
                trace.close_turn(session, context, turn, "error")
                trace.close_run(session, context, "error", None)
            return Finish(RunStatus.FAILED, error=error)
    with context.db.transaction() as session:
        trace.close_turn(session, context, turn, "error" if failed else "ok")
        trace.close_run(session, context, "error" if failed else "ok", None if failed else outcome)
    if failed:
        return Finish(RunStatus.FAILED, error=result.error)
    return Finish(RunStatus.COMPLETED, result=outcome)


def call_model(context: RunContext, config: AgentConfig, provider: Provider, turn: int,
               messages: list[dict[str, Any]], tool_names: tuple[str, ...],
               options: dict[str, Any] | None = None, require_tool: bool = False) -> dict[str, Any]:
    client = model_client(config, provider)
    tools = tool_schemas(list(tool_names))
    with context.db.transaction() as session:
        runs.check_fence(session, context.lease)
        trace.start_model_span(session, context, turn, provider, messages, tools)
    deltas = DeltaPublisher(context.db, context.lease, turn)
    result = client.complete(messages, tools, on_delta=deltas.add, should_stop=lambda: context.keeper.lost is not None,
                             options=options, require_tool=require_tool)
    deltas.flush()
    return result.to_dict()


def record_assistant_message(session: Session, context: RunContext, turn: int, output: dict[str, Any],
                             provider: Provider) -> None:
    result = ModelResult.from_dict(output)
    parts: list[dict[str, Any]] = []
    if result.text:
        parts.append({"type": "text", "text": result.text})
    parts += [{"type": "tool_call", **call.to_dict()} for call in result.tool_calls]
    if result.error is not None:
        parts.append({"type": "error", **result.error})
    chat_sessions.add_message(session, context.run.session_id, MessageRole.ASSISTANT,
                              parts or [{"type": "text", "text": ""}], run_id=context.run.id)
    attributes = trace.finish_model_span(session, context, turn, result, provider)
    append_event(session, context.run.session_id, "model_call.finished",
                 {"turn": turn, **{key: attributes[key] for key in (
                     "model", "finish_reason", "usage", "cost", "cache", "attempts", "latency_ms",
                     "time_to_first_token_ms", "error")}}, run_id=context.run.id)


def run_tool_calls(context: RunContext, turn: int, calls: list[ToolCallRequest], tool_context: ToolContext,
                   policy: dict[str, Any] | None, allowed: tuple[str, ...], repeated: bool = False) -> bool:
    """Run the turn's tool calls in order. True when one waits for approval (the run parks there).
    `repeated`: the same calls as the turn before; they are answered with a reminder, not run again."""
    for index, call in enumerate(calls):
        tool = TOOLS.get(call.name)
        mutating = tool.mutating if tool is not None else False
        if repeated:
            gate: ToolResult | str | None = ToolResult(
                content=f"not run: {call.name} with these arguments is exactly your previous call, and its result is "
                        "above. Use that result: answer now, or do something different.", is_error=True,
                data={"repeated": True})
        elif tool is not None and call.name not in allowed:
            gate = ToolResult(
                content=f"error: {call.name} is not available to this agent; its tools are {', '.join(allowed)}",
                is_error=True)
        else:
            gate = gate_call(context, tool_key(turn, index), call, policy, tool_context.root)
        if gate == "wait":
            return True
        context.step(
            tool_key(turn, index), _tool_body(call, tool_context, gate, tool_key(turn, index)), kind="tool_call",
            input={"tool_call_id": call.id, "name": call.name, "arguments": call.arguments},
            begin=lambda session, call=call, index=index: trace.start_tool_span(session, context, turn, index, call),
            record=lambda session, output, call=call, index=index: record_tool_message(
                session, context, turn, index, call, output),
            interrupted=(lambda call=call: interrupted_result(call).to_dict()) if mutating else None)
    with context.db.transaction() as session:
        trace.close_turn(session, context, turn)
    return False


def gate_call(context: RunContext, key: str, call: ToolCallRequest,
              policy: dict[str, Any] | None, root: Path) -> ToolResult | str | None:
    """None: run the call. A ToolResult: record it instead (denied). "wait": a person must decide first."""
    with context.db.transaction() as session:
        recorded = journal.load_step(session, context.run.id, key)
    if recorded is not None and recorded.status != StepStatus.STARTED.value:
        return None  # already recorded; the step returns it
    try:
        arguments = parse_arguments(call.name, call.arguments)
    except ToolInputError:
        return None  # the tool step itself reports what is wrong with the call
    decision, rule = decide(policy, call.name, arguments, root=root)
    if decision == "allow":
        return None
    if decision == "deny":
        return ToolResult(content=f"denied: the project's approval policy does not allow this {call.name} call "
                                  f"(rule {rule}). Do not retry it; choose another way or ask the user.",
                          is_error=True, data={"denied": True, "rule": rule})
    with context.db.transaction() as session:
        runs.check_fence(session, context.lease)
        approval = approvals.load_for_step(session, context.run.id, key) or approvals.request_approval(
            session, context.run, key, call.name, arguments, rule)
    if approval.status == "pending":
        return "wait"
    if approval.status == "denied":
        return ToolResult(content=f"denied by the user: {approval.reason or 'no reason given'}. Do not retry this call.",
                          is_error=True, data={"denied": True})
    return None


def _tool_body(call: ToolCallRequest, tool_context: ToolContext, preset: ToolResult | None,
               key: str) -> Callable[[], dict[str, Any]]:
    """The tool itself; its span was opened with the journal's `started` (RunContext.step's `begin`)."""
    def body() -> dict[str, Any]:
        if preset is not None:
            return preset.to_dict()
        return run_tool(call.name, call.arguments, replace(tool_context, call_key=key)).to_dict()

    return body


def interrupted_result(call: ToolCallRequest) -> ToolResult:
    return ToolResult(content=f"interrupted: the worker running this {call.name} call stopped before it finished, "
                              "so it may or may not have taken effect. Check the current state before repeating it.",
                      is_error=True, data={"interrupted": True})


def record_tool_message(session: Session, context: RunContext, turn: int, index: int, call: ToolCallRequest,
                        output: dict[str, Any]) -> None:
    result = ToolResult.from_dict(output)
    trace.finish_tool_span(session, context, turn, index, result)
    parts: list[dict[str, Any]] = [{"type": "tool_result", "tool_call_id": call.id, "name": call.name,
                                    "content": result.content, "is_error": result.is_error,
                                    "interrupted": bool(result.data.get("interrupted"))}]
    if result.diff:
        parts.append({"type": "diff", "path": result.data.get("path"), "diff": result.diff})
    chat_sessions.add_message(session, context.run.session_id, MessageRole.TOOL, parts, run_id=context.run.id)


def stop_at_step_cap(context: RunContext, turns: int, max_steps: int) -> RunOutcome:
    return stop_run(context, "step_cap", {
        "code": "step_cap_reached",
        "message": f"Stopped after {turns} model calls: the step cap of {max_steps} (BOOCODE_AGENT_MAX_STEPS) was "
                   "reached before a final answer. The work so far is in the messages above; send a follow-up "
                   "to continue."})


def stop_run(context: RunContext, step_key: str, error: dict[str, Any], turn: int | None = None) -> RunOutcome:
    """End the run as failed with `error`, told to the user as the run's last message (journaled once)."""
    def record(session: Session, output: dict[str, Any]) -> None:
        chat_sessions.add_message(session, context.run.session_id, MessageRole.ASSISTANT,
                                  [{"type": "error", **output}], run_id=context.run.id)

    context.step(step_key, lambda: error, kind="stop", record=record)
    with context.db.transaction() as session:
        if turn is not None:
            trace.close_turn(session, context, turn, "error")
        trace.close_run(session, context, "error")
    return Finish(RunStatus.FAILED, error=error)
