"""An agent turn: a model call, then its tool calls, each journaled; the next turn follows in the same
task while no other task waits for a worker (ADR 0006), else in a new one.

    run_turn(context):
        a subagent without a free slot                    -> defer (a subagent ending frees one)
        decide over the journal (orchestrator/agent/decision.py), then, in one transaction:
            cancelled -> stop; an earlier run in this session is unfinished -> defer (it wakes us);
            read the project and the conversation; for CallModel, build the prompt and begin its step
        CallModel(N): step "turn/N/model": spans open as it begins; the answer is streamed (deltas as
            events); message, last deltas and span end are written with the journal entry; decide again
        Conclude:      a final answer completes (a schema mismatch is fed back, up to twice); a failed
                       call fails; the turn and run spans close as the outcome is recorded, in the
                       model step's own transaction when the answer comes (`ends`)
        RunTools:      the turn's tool calls (orchestrator/agent/tool_calls.py) -> continue, or park
                       for an approval
        StopRepeating / StopAtCap: record why as the run's last message and fail
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from sqlalchemy.orm import Session

from orchestrator.agent import worktree
from orchestrator.agent.decision import (
    MAX_REPEATS,
    CallModel,
    Conclude,
    Decision,
    RunTools,
    StopAtCap,
    StopRepeating,
    decide,
    schema_retries,
)
from orchestrator.agent.host import SubagentHost
from orchestrator.agent.profile import SCHEMA_RETRIES, AgentProfile, ProfileError, agent_profile, check_against_schema
from orchestrator.agent.prompt import image_digests, render_messages, system_prompt
from orchestrator.agent.streaming import DeltaPublisher
from orchestrator.agent.tool_calls import TurnTools, run_tool_calls
from orchestrator.domain.enums import MessageRole, RunStatus, StepStatus
from orchestrator.domain.failure import Failure
from orchestrator.domain.keys import STEP_CAP, feedback_key, model_key, repeating_key
from orchestrator.errors import ConfigurationError, RunCancelledError
from orchestrator.lifecycle import Continue, Defer, Finish, Handler, Park, RunContext, RunOutcome
from orchestrator.llm.client import ModelClient, ModelResult, Provider
from orchestrator.providers import resolve_provider, server_provider
from orchestrator.sandbox import Sandbox
from orchestrator.settings import Settings
from orchestrator.store import blobs, projects, runs, subagents
from orchestrator.store import sessions as chat_sessions
from orchestrator.store.events import append_event
from orchestrator.store.journal import Entry
from orchestrator.store.models import Blob, Project
from orchestrator.tools.base import ToolContext
from orchestrator.tools.policy import wants_network
from orchestrator.tools.registry import tool_schemas
from orchestrator.tracing import spans as trace


@dataclass(frozen=True)
class AgentConfig:
    provider: Provider | None
    max_steps: int = 25
    max_attempts: int = 4
    timeout_seconds: float = 120.0
    sandbox: Sandbox = Sandbox()
    secret_key: str | None = field(default=None, repr=False)
    subagent_limits: subagents.Limits = subagents.Limits(server=8, per_user=4)
    stream_flush_seconds: float = 0.1

    @classmethod
    def from_settings(cls, settings: Settings) -> "AgentConfig":
        return cls(provider=server_provider(settings), max_steps=settings.agent_max_steps,
                   max_attempts=settings.model_max_attempts, timeout_seconds=settings.model_timeout_seconds,
                   sandbox=Sandbox.from_settings(settings),
                   secret_key=settings.secret_key, subagent_limits=subagents.Limits.from_settings(settings),
                   stream_flush_seconds=settings.stream_flush_seconds)


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
    if not has_own_worktree(context) or not isinstance(outcome, Finish):
        return outcome
    with context.db.transaction() as session:
        root = Path(projects.load_project(session, context.run.project_id).root_path)
    info = worktree.release(root, str(context.run.id), sandbox)
    if outcome.status == RunStatus.COMPLETED and isinstance(outcome.result, dict):
        return replace(outcome, result={**outcome.result, "worktree": info})
    if isinstance(outcome.error, Failure):
        return replace(outcome, error=outcome.error.with_context(worktree=info))
    return replace(outcome, error={**(outcome.error or {}), "worktree": info})


@dataclass(frozen=True)
class Turn:
    """What this task's turn works with, resolved once from the project and the run's spec."""

    project: Project
    provider: Provider
    profile: AgentProfile
    root: Path
    tools: TurnTools


def run_turn(context: RunContext, config: AgentConfig) -> RunOutcome:
    if context.run.kind == subagents.KIND:
        with context.db.transaction() as session:
            admitted = subagents.admit(session, context.run.id, config.subagent_limits)
        if not admitted:  # every slot is taken: back to the queue until a subagent ends and frees one
            return Defer(wake=lambda session: subagents.slot_free_for(
                session, context.run.id, config.subagent_limits))
    decision = decide(context.steps, config.max_steps)
    call: PreparedCall | None = None
    turn: Turn | Finish | None = None
    with context.db.transaction() as session:
        if runs.check_fence(session, context.lease) == RunStatus.CANCELLED:
            raise RunCancelledError(f"run {context.run.id} was cancelled")
        waiting = wait_behind_earlier_run(session, context)
        if waiting is not None:
            return waiting
        project = projects.load_project(session, context.run.project_id)
        history = chat_sessions.list_history(session, context.run, known=context.carried.get("history")) \
            if isinstance(decision, CallModel) else []
        # the model call begins in the turn's read transaction, unless the run has its own worktree (made
        # with git, outside any transaction): see "What a turn costs" in docs/turns.md
        if isinstance(decision, CallModel) and not has_own_worktree(context):
            turn = prepare_turn(context, config, project)
            if isinstance(turn, Finish):
                return turn
            prepared = prepare_call(context, config, turn, decision.turn, history, session)
            if isinstance(prepared, Finish):
                return prepared
            call = prepared
            context.journal_started(session, call.key, kind="model_call", input=call.input, begin=call.begin)
    if history:
        context.carried["history"] = history
    if turn is None:
        turn = prepare_turn(context, config, project)
    if isinstance(turn, Finish):
        return turn
    if isinstance(decision, CallModel):
        failed = call_model_step(context, config, turn, decision.turn, history, call)
        if failed is not None:
            return failed
        if context.ended is not None:  # the answer ended the run in the step's own transaction
            return context.ended.outcome
        decision = decide(context.steps, config.max_steps)
    return act(context, config, turn, decision)


def has_own_worktree(context: RunContext) -> bool:
    return ((context.run.input or {}).get("spec") or {}).get("isolation") == "worktree"


def wait_behind_earlier_run(session: Session, context: RunContext) -> Defer | None:
    """A follow-up (a message sent while the session's earlier run works) waits for that run: back to
    queued until it ends. Its first claim announced it as started (`run.started`), so it says it waits
    (`run.queued` naming the run it is `behind`) and is announced as started again when it does start
    (the first claim after that which is no takeover, with nothing journaled yet)."""
    run, lease = context.run, context.lease
    first = not context.steps and context.turns_in_task == 0
    earlier = runs.earlier_unfinished_run(session, run)
    if earlier is not None:
        if first and lease.claims == 1:
            append_event(session, lease.session_id, "run.queued",
                         {"kind": run.kind, "parent_id": None, "behind": str(earlier.id)}, run_id=run.id)
        return Defer(wake=lambda session: runs.earlier_unfinished_run(session, run, lock=True) is None)
    if first and run.parent_id is None and lease.claims > 1 and lease.crashes == 0:
        append_event(session, lease.session_id, "run.started", {"epoch": lease.epoch, "owner": lease.owner},
                     run_id=run.id)
    return None


def prepare_turn(context: RunContext, config: AgentConfig, project: Project) -> Turn | Finish:
    """The model, profile and working tree of this run, or why it cannot go on."""
    try:
        provider = resolve_provider(project.provider, config.provider, config.secret_key)
    except ConfigurationError as error:
        return Finish(RunStatus.FAILED, error=Failure("provider_misconfigured", error.problems[0]))
    if provider is None:
        return Finish(RunStatus.FAILED, error=Failure(
            "no_model_provider",
            "no model is configured: set the project's provider (boocode project provider), or "
            "BOOCODE_MODEL_BASE_URL and BOOCODE_MODEL (and BOOCODE_MODEL_API_KEY if the endpoint needs one) "
            "for the web and worker processes"))
    try:
        profile = agent_profile(context.run, project, provider)
    except ProfileError as error:
        return Finish(RunStatus.FAILED, error=error.failure)
    root = Path(project.root_path)
    if profile.spec.get("isolation") == "worktree":  # a workflow agent with its own checkout
        try:
            root = worktree.ensure(root, str(context.run.id), config.sandbox).path
        except worktree.WorktreeError as error:
            return Finish(RunStatus.FAILED, error=Failure("worktree_failed", str(error)))
    timeout = profile.spec.get("timeoutSeconds")
    if timeout and context.run.started_at is not None and \
            (datetime.now(timezone.utc) - context.run.started_at).total_seconds() > float(timeout):
        return Finish(RunStatus.FAILED, error=Failure("agent_timeout",
                                                      f"the agent ran longer than its timeout of {timeout}s"))
    host = SubagentHost(context, root, config.subagent_limits) if "spawn_subagent" in profile.tools else None
    tool_context = ToolContext(root=root, sandbox=config.sandbox, network=wants_network(project.approval_policy),
                               policy=project.approval_policy,
                               should_stop=lambda: context.keeper.lost is not None, host=host)
    return Turn(project=project, provider=profile.provider, profile=profile, root=root,
                tools=TurnTools(tool_context, project.approval_policy, profile.tools))


def act(context: RunContext, config: AgentConfig, turn: Turn, decision: Decision) -> RunOutcome:
    """Carry out what `decide` chose (other than calling the model)."""
    if isinstance(decision, Conclude):
        return conclude(context, decision.turn, decision.result, turn.profile)
    if isinstance(decision, StopRepeating):
        return stop_repeating(context, decision.turn, decision.result)
    if isinstance(decision, StopAtCap):
        return stop_at_step_cap(context, decision.turns, config.max_steps)
    if isinstance(decision, RunTools):
        if run_tool_calls(context, decision.turn, decision.result.tool_calls, turn.tools, decision.repeated):
            return Park()
    return Continue()


@dataclass
class PreparedCall:
    """A model call ready to begin: its step, what it sends, and the span it opens as it begins."""

    key: str
    input: dict[str, Any]
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    begin: Callable[[Session], None]
    started: list[trace.StartedCall | None]  # what `begin` opened (for the call's end)


def prepare_call(context: RunContext, config: AgentConfig, turn: Turn, number: int, history: list[Any],
                 session: Session | None = None) -> PreparedCall | Finish:
    """The prompt of model call `number` and how its step begins (the images read in `session`, if given,
    else in a transaction of their own). A Finish when the call cannot be made."""
    provider, profile = turn.provider, turn.profile
    digests = image_digests(history)
    if digests and not provider.vision:
        return Finish(RunStatus.FAILED, error=Failure(
            "model_cannot_see_images",
            f"the configured model {provider.model!r} is text-only, so the images were not sent and no call was "
            "made: use a vision-capable model and set BOOCODE_MODEL_VISION=true, or resend the message without images"))
    images: dict[str, str] = {}
    if digests and session is not None:
        images = {digest: data_url(blobs.load_blob(session, digest)) for digest in digests}
    elif digests:
        with context.db.transaction() as own:
            images = {digest: data_url(blobs.load_blob(own, digest)) for digest in digests}
    messages = render_messages(profile.system(system_prompt(turn.project.name, str(turn.root))), history, images)
    tools = tool_schemas(list(profile.tools))
    started: list[trace.StartedCall | None] = [None]

    def begin(session: Session) -> None:
        trace.open_turn(session, context.run, number, run_span_open=context.carried.get("run_span_open", False))
        started[0] = trace.start_model_span(session, context.run, number, provider, messages, tools,
                                            stored=context.carried.setdefault("stored_blobs", set()))

    return PreparedCall(model_key(number), {"turn": number, "model": provider.model}, messages, tools, begin, started)


def call_model_step(context: RunContext, config: AgentConfig, turn: Turn, number: int,
                    history: list[Any], call: PreparedCall | None = None) -> Finish | None:
    """Journal one model call: its spans open as it begins (in `call`'s own transaction if it has begun,
    see run_turn); the answer, its message, the stream's last deltas and the span's end are written in
    one transaction, with the run's end when the answer ends it. A Finish when it cannot be made."""
    provider, profile = turn.provider, turn.profile
    begun = call is not None
    if call is None:
        prepared = prepare_call(context, config, turn, number, history)
        if isinstance(prepared, Finish):
            return prepared
        call = prepared
    messages, tools, started = call.messages, call.tools, call.started
    deltas = DeltaPublisher(context.db, context.lease, number, interval=config.stream_flush_seconds)

    def body() -> dict[str, Any]:
        try:
            result = model_client(config, provider).complete(
                messages, tools, on_delta=deltas.add, should_stop=lambda: context.keeper.lost is not None,
                options=profile.request_options(), require_tool=provider.require_tool_first and number == 0)
        finally:
            deltas.stop()  # before the result's transaction, which writes what is still pending
        return result.to_dict()

    def ends(output: dict[str, Any]) -> Finish | None:
        """A final answer (or a failed call) ends the run with the step, unless the worktree must be
        settled first (`settle_worktree` adds to the result) or a schema mismatch is fed back."""
        if has_own_worktree(context):
            return None
        after = decide({**context.steps, call.key: Entry(StepStatus.FINISHED.value, output)}, config.max_steps)
        return conclusion(context, after.turn, after.result, profile) if isinstance(after, Conclude) else None

    context.step(call.key, body, kind="model_call", input=call.input, begin=call.begin, ends=ends, begun=begun,
                 record=lambda session, output: record_assistant_message(
                     session, context, number, output, provider, deltas, started[0]))
    context.carried["run_span_open"] = True  # the step's begin committed: the run's span exists
    return None


def stop_repeating(context: RunContext, turn: int, result: ModelResult) -> RunOutcome:
    call = result.tool_calls[0]
    return stop_run(context, repeating_key(turn), Failure(
        "model_repeating",
        f"Stopped: the model made the same call {call.name}({call.arguments}) {MAX_REPEATS + 1} times in a row "
        "without using its result, so it was not making progress. A larger model may manage this task; or send a "
        "follow-up that says what to do next."), turn=turn)


def data_url(blob: Blob) -> str:
    return f"data:{blob.media_type};base64,{base64.b64encode(blob.data).decode()}"


def conclusion(context: RunContext, turn: int, result: ModelResult, profile: AgentProfile) -> Finish | None:
    """How a final answer or a failed model call ends the run (its turn and run spans close as the end is
    recorded); None when the answer misses its schema and is fed back instead.

    With a schema (a workflow's `agent(..., {schema})`) the answer must be JSON that validates: an
    invalid one is fed back as a user message and the agent tries again, up to SCHEMA_RETRIES times."""
    if result.error is not None:
        return Finish(RunStatus.FAILED, error=result.error, record=close_spans(context, turn, "error"))
    outcome: dict[str, Any] = {"text": result.text, "turns": turn + 1}
    if profile.schema is None:
        return Finish(RunStatus.COMPLETED, result=outcome, record=close_spans(context, turn, "ok", outcome))
    value, problem = check_against_schema(result.text, profile.schema)
    if problem is None:
        outcome["value"] = value
        return Finish(RunStatus.COMPLETED, result=outcome, record=close_spans(context, turn, "ok", outcome))
    if schema_retries(context.steps, turn) < SCHEMA_RETRIES:
        return None
    error = Failure("schema_invalid", f"the agent's answer did not match the schema after {SCHEMA_RETRIES + 1} "
                                      f"tries: {problem}")
    return Finish(RunStatus.FAILED, error=error, record=close_spans(context, turn, "error"))


def conclude(context: RunContext, turn: int, result: ModelResult, profile: AgentProfile) -> RunOutcome:
    """The run's end (`conclusion`), or the schema mismatch fed back as a user message."""
    finish = conclusion(context, turn, result, profile)
    if finish is not None:
        return finish
    _value, problem = check_against_schema(result.text, profile.schema or {})
    feedback = (f"Your answer does not match the required JSON Schema: {problem}. Answer again with only "
                "the JSON value, no prose and no code fence.")

    def record(session: Session, output: dict[str, Any]) -> None:
        chat_sessions.add_message(session, context.run.session_id, MessageRole.USER,
                                  [{"type": "text", "text": output["text"]}], run_id=context.run.id)
        trace.close_turn(session, context.run, turn)

    context.step(feedback_key(turn), lambda: {"text": feedback}, kind="schema_feedback", record=record)
    return Continue()


def close_spans(context: RunContext, turn: int | None, status: str,
                result: Any = None) -> Callable[[Session], None]:
    """Close the turn's span (if any) and the run's, in the transaction that records the run's end."""
    def record(session: Session) -> None:
        if turn is not None:
            trace.close_turn(session, context.run, turn, status)
        trace.close_run(session, context.run, status, result)

    return record


def record_assistant_message(session: Session, context: RunContext, turn: int, output: dict[str, Any],
                             provider: Provider, deltas: DeltaPublisher,
                             started: trace.StartedCall | None = None) -> None:
    deltas.write(session)  # the stream's last deltas, before the message that replaces them
    result = ModelResult.from_dict(output)
    parts: list[dict[str, Any]] = []
    if result.text:
        parts.append({"type": "text", "text": result.text})
    parts += [{"type": "tool_call", **call.to_dict()} for call in result.tool_calls]
    if result.error is not None:
        parts.append({"type": "error", **result.error})
    chat_sessions.add_message(session, context.run.session_id, MessageRole.ASSISTANT,
                              parts or [{"type": "text", "text": ""}], run_id=context.run.id)
    attributes = trace.finish_model_span(session, context.run, turn, result, provider, started,
                                         last=context.carried.get("last_call"))
    context.carried["last_call"] = started  # for the next call's cache diagnosis (see finish_model_span)
    append_event(session, context.run.session_id, "model_call.finished",
                 {"turn": turn, **{key: attributes[key] for key in (
                     "model", "finish_reason", "usage", "cost", "cache", "attempts", "latency_ms",
                     "time_to_first_token_ms", "error")}}, run_id=context.run.id)


def stop_at_step_cap(context: RunContext, turns: int, max_steps: int) -> RunOutcome:
    return stop_run(context, STEP_CAP, Failure(
        "step_cap_reached",
        f"Stopped after {turns} model calls: the step cap of {max_steps} (BOOCODE_AGENT_MAX_STEPS) was reached "
        "before a final answer. The work so far is in the messages above; send a follow-up to continue."))


def stop_run(context: RunContext, step_key: str, failure: Failure, turn: int | None = None) -> RunOutcome:
    """End the run as failed, told to the user as the run's last message (journaled once)."""
    def record(session: Session, output: dict[str, Any]) -> None:
        chat_sessions.add_message(session, context.run.session_id, MessageRole.ASSISTANT,
                                  [{"type": "error", **output}], run_id=context.run.id)

    context.step(step_key, failure.to_dict, kind="stop", record=record)
    return Finish(RunStatus.FAILED, error=failure, record=close_spans(context, turn, "error"))
