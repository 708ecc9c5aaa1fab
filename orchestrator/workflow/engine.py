"""Advancing a workflow run: short "tick" tasks that replay the script against its journal.

    tick(workflow run):
        settle every call whose child run has finished (value, tokens, cost onto the call row), at once
        queued calls fill every free slot and the last replay is recent (and no token budget)
                                                    -> start them in order, no replay; defer
        new isolate (in a pooled sandbox process); start the script; replay: serve every settled call
            in the order the script made them (an unchanged call from an earlier pass is "cached"),
            each batch of ready answers in one request; refuse what breaks a rule (unknown agentType,
            invalid schema, agent cap) so that call throws
        dispatch new calls as child agent runs, up to the run's concurrency, in one transaction; queue
            the rest (rows `queued`, in the order made) and drop queued ones the script no longer makes
        the script returned or threw                -> finish: completed / completed_with_failures / failed
        agents are in flight                        -> defer; a finishing child enqueues the next tick
        nothing in flight and the script still waits -> failed: it waits for something that never comes

No tick waits for an agent: a worker slot is held only for the replay. A child that finishes
enqueues the parent's next tick; one that finishes while a tick runs is noticed when that tick hands
the lease back (`wake`), so no completion is slept through. A script that crashes its sandbox
process (a V8 fatal error, a segfault) fails the run with `script_crashed` and the signal; this
worker process is untouched and its pool starts another sandbox process.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from sqlalchemy.orm import Session

from orchestrator.agent import worktree
from orchestrator.agent.types import agent_type_problem, discover_agent_types
from orchestrator.domain.enums import RunStatus
from orchestrator.errors import RunCancelledError
from orchestrator.jobs import task_for_kind
from orchestrator.lifecycle import Defer, Finish, Handler, RunContext, RunOutcome
from orchestrator.sandbox import Sandbox as CommandSandbox
from orchestrator.settings import Settings
from orchestrator.store import runs, workflows
from orchestrator.store.models import Run, WorkflowCall
from orchestrator.workflow.catalog import discover, read_project_script
from orchestrator.workflow.sandbox import Nested, Sandbox, SandboxError, Settled, replay
from orchestrator.workflow.script import ScriptError, load_script

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkflowConfig:
    concurrency: int = 8
    max_agents: int = 1000
    script_timeout_seconds: float = 2.0
    memory_bytes: int = 128 * 1024 * 1024
    sandbox_processes: int = 2
    personal_dir: Path | None = None
    command_sandbox: CommandSandbox = CommandSandbox()  # where the worktree check's git runs (orchestrator/sandbox.py)

    @classmethod
    def from_settings(cls, settings: Settings) -> "WorkflowConfig":
        return cls(concurrency=settings.workflow_concurrency, max_agents=settings.workflow_max_agents,
                   script_timeout_seconds=settings.workflow_script_timeout_seconds,
                   memory_bytes=settings.workflow_memory_mb * 1024 * 1024,
                   sandbox_processes=settings.workflow_sandbox_processes,
                   personal_dir=settings.data_dir / "workflows", command_sandbox=CommandSandbox.from_settings(settings))


def handler_from_settings(settings: Settings) -> Handler:
    """The `workflow` kind's handler (orchestrator/runkinds.py)."""
    return make_workflow_handler(WorkflowConfig.from_settings(settings))


def make_workflow_handler(config: WorkflowConfig) -> Handler:
    def handle(context: RunContext) -> RunOutcome:
        return tick(context, config)

    return handle


@dataclass
class _Plan:
    """What one replay decided, written in one fenced transaction afterwards."""

    fresh: list[dict[str, Any]]
    refusals: list[tuple[dict[str, Any], dict[str, Any]]]
    served: list[WorkflowCall]
    touched: list[str]


def tick(context: RunContext, config: WorkflowConfig) -> RunOutcome:
    run = context.run
    spec = run.input
    pass_number = int(spec.get("pass", 1))
    caps = spec.get("caps") or {}
    concurrency = min(int(caps.get("concurrency") or config.concurrency), config.concurrency)
    max_agents = min(int(caps.get("max_agents") or config.max_agents), config.max_agents)
    try:
        script = load_script(spec["script"])
    except ScriptError as error:
        return _fail(context, {"code": "script_invalid", "message": error.message, "line": error.line})

    opened = _open_tick(context, concurrency, pass_number, budgeted=caps.get("max_tokens") is not None)
    if opened.started is not None:  # no replay: queued calls took the free slots
        for child_id in opened.started:
            context.enqueue(task_for_kind("agent"), str(child_id))
        # the results settled now reach the script by REPLAY_EVERY, even if no child finishes before
        # (the recovery sweep enqueues the tick then)
        return Defer(wake=lambda session: workflows.tick_wanted(session, run.id),
                     wake_at=(run.replayed_at or datetime.now(timezone.utc)) + REPLAY_EVERY)
    calls, in_flight, slots = opened.calls, opened.in_flight, opened.slots

    replayed_at = datetime.now(timezone.utc)
    journal = _Journal(calls, opened.root, config, pass_number, max_agents)
    plan = journal.plan
    try:
        with Sandbox(script, spec.get("args"), timeout_seconds=config.script_timeout_seconds,
                     memory_bytes=config.memory_bytes, pool_size=config.sandbox_processes) as sandbox:
            sandbox.set_budget(caps.get("max_tokens"), 0)
            sandbox.start()
            replay(sandbox, journal.settle)
            state = sandbox.state()
    except SandboxError as error:
        _record(context, run, plan, _Dispatch([], [], [], []), [], pass_number, None)
        failure = {"code": error.code, "message": error.message, "line": error.line}
        if error.signal is not None:
            failure["signal"] = error.signal
        return _fail(context, failure)

    dispatch = _Dispatch([], [], [], []) if state["done"] else _dispatch(plan, calls, slots)
    children = _record(context, run, plan, dispatch, state["logs"], pass_number, replayed_at)
    for child_id in children:
        context.enqueue(task_for_kind("agent"), str(child_id))

    if state["done"]:
        return _conclude(context, run, state, plan, pass_number)
    if in_flight or children:
        # a child that finished after this tick looked: tick again rather than wait for its wake-up call
        return Defer(wake=lambda session: workflows.tick_wanted(session, run.id))
    return _fail(context, {"code": "script_stalled",
                           "message": "the script is waiting for something that never finishes: no agent is running "
                                      "and none is left to start (an await on a promise nothing resolves?)"})


@dataclass
class _Opened:
    """A tick's first transaction: the queued calls it started (no replay then), or what a replay needs."""

    in_flight: int
    slots: int
    started: list[Any] | None = None
    root: Path = Path("/")
    calls: dict[str, WorkflowCall] = field(default_factory=dict)


def _open_tick(context: RunContext, concurrency: int, pass_number: int, *, budgeted: bool) -> _Opened:
    """Settle what finished; then start queued calls in the free slots, or load the whole journal for a
    replay (`_replay_due`), in the same transaction."""
    run = context.run
    with context.db.transaction() as session:
        _fence(session, context)
        runs.take_tick(session, context.lease)
        # the running calls and the head of the queue: enough to settle and to decide
        head = workflows.load_open_calls(session, run.id, queued_limit=concurrency)
        workflows.settle_finished_children(session, run, head)
        in_flight = sum(1 for call in head.values() if call.status == "running")
        queued = [call for call in head.values() if call.status == "queued"]
        slots = max(concurrency - in_flight, 0)
        if not _replay_due(run, queued, slots, budgeted=budgeted):
            return _Opened(in_flight, slots, started=_start_queued(session, run, queued[:slots], pass_number))
        return _Opened(in_flight, slots, root=Path(workflows.project_root(session, run.project_id)),
                       calls=workflows.load_calls(session, run.id, prompts=False))


# A tick that has queued calls for every free slot starts them without replaying the script, but the
# script is still replayed this often, so it sees its results (and logs its progress) during a long
# fan-out rather than only once its queue runs dry.
REPLAY_EVERY = timedelta(seconds=2)


def _replay_due(run: Run, queued: list[WorkflowCall], slots: int, *, budgeted: bool) -> bool:
    """Replay the script, or only start queued calls? A replay is needed when the queue cannot fill
    the free slots (the script may have more to ask, or be done), with a token budget (a replay
    decides whether each call may still start), and at least every REPLAY_EVERY. In between, the
    calls the last replay queued start in the order the script made them; one it would no longer
    make (its results changed its course) is dropped at the next replay, unless it started."""
    if budgeted or not queued or len(queued) < slots or run.replayed_at is None:
        return True
    return datetime.now(timezone.utc) - run.replayed_at >= REPLAY_EVERY


def _start_queued(session: Session, run: Run, queued: list[WorkflowCall], pass_number: int) -> list[Any]:
    """Start queued calls (loaded with their prompts) as child runs, in the order given."""
    return workflows.start_calls(session, run, [({"key": call.call_key, "prompt": call.prompt, "options": call.options},
                                                 call) for call in queued], pass_number)


@dataclass(frozen=True)
class _Dispatch:
    """What a replay's new and queued calls become: started now, queued for a free slot (new ones,
    and failed or cancelled ones of an earlier pass by key), or dropped (queued before, no longer made
    by the script)."""

    start: list[dict[str, Any]]
    queue: list[dict[str, Any]]
    again: list[str]
    drop: list[str]


def _dispatch(plan: _Plan, calls: dict[str, WorkflowCall], slots: int) -> _Dispatch:
    """What becomes of the calls a replay found unanswered, the script still running (a script that
    returned or threw starts nothing more; what is queued then ends cancelled)."""
    touched, waiting = set(plan.touched), plan.fresh[slots:]
    return _Dispatch(start=plan.fresh[:slots], queue=[call for call in waiting if call["key"] not in calls],
                     again=[call["key"] for call in waiting
                            if call["key"] in calls and calls[call["key"]].status in ("failed", "cancelled")],
                     drop=[call.call_key for call in calls.values()
                           if call.status == "queued" and call.call_key not in touched])


class _Journal:
    """One tick's answers to the script's calls (`replay`'s `settle`), from the calls loaded at its
    start; what the tick must then write (fresh calls, refusals, calls served from an earlier pass)
    collects in `plan`. The project's git check and each distinct schema's check run at most once
    per tick, however many calls ask: a fan-out replays every call on every tick."""

    def __init__(self, calls: dict[str, WorkflowCall], root: Path, config: WorkflowConfig, pass_number: int,
                 max_agents: int) -> None:
        self.calls, self.root, self.config = calls, root, config
        self.pass_number, self.max_agents = pass_number, max_agents
        self.agent_types, _ = discover_agent_types(root)
        self.admitted = sum(1 for call in calls.values() if call.status != "refused")
        self.plan = _Plan(fresh=[], refusals=[], served=[], touched=[])
        self.nested_scripts: dict[str, Any] = {}
        self.checked: dict[str, dict[str, Any] | None] = {}  # a call's rule checks but the cap, by options
        self._git_problem: list[str | None] = []

    def worktree_problem(self) -> str | None:
        if not self._git_problem:
            self._git_problem.append(worktree.repository_problem(self.root, self.config.command_sandbox))
        return self._git_problem[0]

    def settle(self, call: dict[str, Any]) -> Settled | Nested | None:
        if call.get("kind") == "workflow":
            return _nested(call, self.root, self.config, self.nested_scripts)
        key = call["key"]
        self.plan.touched.append(key)
        row = self.calls.get(key)
        if row is not None and row.status == "queued":  # made before, waiting for a slot: still wanted
            self.plan.fresh.append(call)
            return None
        if row is not None and not (row.status in ("failed", "cancelled") and row.pass_number < self.pass_number):
            return _journaled(row, self.pass_number, self.plan)
        refusal = self._refusal(call, retry=row is not None)
        if refusal is not None:
            self.plan.refusals.append((call, refusal))
            return Settled(False, message=refusal["message"])
        if row is None:
            self.admitted += 1
        self.plan.fresh.append(call)
        return None

    def _refusal(self, call: dict[str, Any], retry: bool) -> dict[str, Any] | None:
        options = call.get("options") or {}
        identity = json.dumps({name: options.get(name) for name in RULED_OPTIONS}, sort_keys=True)
        if identity not in self.checked:
            self.checked[identity] = _refusal(options, self.agent_types, self.worktree_problem)
        if self.checked[identity] is not None:
            return self.checked[identity]
        if not retry and self.admitted >= self.max_agents:
            return {"code": "agent_cap_reached",
                    "message": f"agent(): this run may start at most {self.max_agents} agents and has started "
                               f"{self.admitted}"}
        return None


def _journaled(row: WorkflowCall, pass_number: int, plan: _Plan) -> Settled | None:
    """The answer the journal holds for a call (None: its agent is still running)."""
    if row.status == "running":
        return None
    if row.status == "completed":
        if row.pass_number < pass_number:
            plan.served.append(row)
        return Settled(True, row.value, tokens=row.tokens)
    if row.status == "refused" or (row.error or {}).get("code") == "schema_invalid":
        return Settled(False, message=(row.error or {}).get("message", "the agent call was refused"))
    return Settled(True, None, tokens=row.tokens)  # stopped or died: null, listed in failures


EFFORTS = ("minimal", "low", "medium", "high")
RULED_OPTIONS = ("isolation", "effort", "agentType", "schema")  # what `_refusal` looks at


def _refusal(options: dict[str, Any], agent_types: dict[str, Any],
             worktree_problem: Callable[[], str | None]) -> dict[str, Any] | None:
    """Why a call with these options may not start (the agent cap aside), or None."""
    isolation = options.get("isolation")
    if isolation is not None and isolation != "worktree":
        return {"code": "invalid_isolation",
                "message": f"agent(): isolation must be 'worktree' (or left out), not {isolation!r}"}
    if isolation == "worktree" and (problem := worktree_problem()) is not None:
        return {"code": "isolation_unavailable",
                "message": f"agent(): isolation 'worktree' needs a git repository with a commit: {problem}"}
    if options.get("effort") is not None and options["effort"] not in EFFORTS:
        return {"code": "invalid_effort",
                "message": f"agent(): effort must be one of {', '.join(EFFORTS)}, not {options['effort']!r}"}
    agent_type = options.get("agentType")
    if agent_type is not None and (problem := agent_type_problem(agent_types, agent_type)) is not None:
        return {"code": "unknown_agent_type", "message": f"agent(): {problem}"}
    if options.get("schema") is not None:
        try:
            Draft202012Validator.check_schema(options["schema"])
        except SchemaError as error:
            return {"code": "invalid_schema",
                    "message": f"agent(): the schema is not valid JSON Schema: {error.message}"}
    return None


def _nested(call: dict[str, Any], root: Path, config: WorkflowConfig, cache: dict[str, Any]) -> Settled | Nested:
    spec = call.get("spec") or {}
    label = str(spec.get("name") or spec.get("scriptPath") or "")
    if label not in cache:
        try:
            if "scriptPath" in spec:
                cache[label] = Nested(load_script(read_project_script(root, spec["scriptPath"])))
            else:
                found, _ = discover(root, config.personal_dir)
                if spec.get("name") not in found:
                    known = ", ".join(sorted(found))
                    raise ScriptError(f"no workflow named {spec.get('name')!r}; known: {known}")
                cache[label] = Nested(found[spec["name"]].script)
        except ScriptError as error:
            cache[label] = Settled(False, message=f"workflow({label!r}): {error}")
    return cache[label]


def _record(context: RunContext, run: Run, plan: _Plan, dispatch: _Dispatch, logs: list[dict[str, Any]],
            pass_number: int, replayed_at: datetime | None) -> list[Any]:
    """Write what the replay decided, fenced, in one transaction: refusals, cache marks, logs, the
    new child runs (all of this tick's, together) and the calls that wait for a slot."""
    with context.db.transaction() as session:
        _fence(session, context)
        keys = [call["key"] for call, _ in plan.refusals] + [row.call_key for row in plan.served] + \
            [call["key"] for call in dispatch.start]
        calls = workflows.load_calls_by_key(session, run.id, keys)
        for call, error in plan.refusals:
            if call["key"] not in calls:
                calls[call["key"]] = workflows.refuse(session, run, call, pass_number, error)
        for served in plan.served:
            workflows.mark_served(session, run, calls[served.call_key], pass_number)
        workflows.add_logs(session, run, logs)
        children = workflows.start_calls(session, run, [(call, calls.get(call["key"])) for call in dispatch.start],
                                         pass_number)
        workflows.queue_calls(session, run, dispatch.queue, pass_number, again=dispatch.again)
        workflows.drop_queued(session, run.id, dispatch.drop)
        if replayed_at is not None:
            runs.mark_replayed(session, context.lease, replayed_at)
        return children


def _conclude(context: RunContext, run: Run, state: dict[str, Any], plan: _Plan, pass_number: int) -> RunOutcome:
    with context.db.transaction() as session:
        _fence(session, context)
        # agents the script asked for that never started, and (below) ones it started but never awaited
        workflows.cancel_queued(session, [run.id], "the workflow failed before this agent started" if state["error"]
                                else "the workflow finished without waiting for this agent")
        calls = workflows.load_calls(session, run.id, prompts=False)
        # agents the script started but never awaited: stop them, the run is over, and record how each
        # ended on its call (cancelled, or what it finished with meanwhile), so no report says `running`
        children = workflows.children_of_running_calls(session, calls.values())
        for call in calls.values():
            if call.status == "running" and call.child_run_id is not None:
                child = children.get(call.child_run_id)
                if child is None:
                    continue
                if not RunStatus(child.status).is_terminal:
                    child = runs.cancel_run(session, child.id,
                                            reason="the workflow finished without waiting for this agent")
                workflows.settle_from_child(session, run, call, child)
        touched = set(plan.touched)
        failures = [{"kind": "agent", "key": call.call_key, "label": call.label, "phase": call.phase,
                     "status": call.status, "child_run_id": str(call.child_run_id) if call.child_run_id else None,
                     "reason": (call.error or {}).get("message") or call.status}
                    for call in calls.values() if call.call_key in touched and call.status != "completed"]
        failures += [{"kind": failure["kind"], "index": failure["index"], "reason": failure["error"]["message"],
                      "line": failure["error"].get("line")} for failure in state["failures"]]
        summary = workflows.totals(session, run.id)
        summary["cached"] = sum(1 for call in calls.values() if call.status == "completed"
                                and call.pass_number < pass_number and call.served_pass == pass_number)
        summary["pass"] = pass_number
    if state["error"] is not None:
        error = state["error"]
        return _fail(context, {"code": error.get("code") or "script_error", "name": error["name"],
                               "message": error["message"],
                               "line": error["line"], "failures": failures, "summary": summary})
    status = RunStatus.COMPLETED_WITH_FAILURES if failures else RunStatus.COMPLETED
    return Finish(status, result={"value": state["result"], "failures": failures, "summary": summary})


def _fence(session: Session, context: RunContext) -> None:
    """Refuse to write for a stale tick, and stop one whose run was cancelled meanwhile."""
    if runs.check_fence(session, context.lease) == RunStatus.CANCELLED:
        raise RunCancelledError(f"workflow run {context.run.id} was cancelled")


def _fail(context: RunContext, error: dict[str, Any]) -> RunOutcome:
    return Finish(RunStatus.FAILED, error=error)  # queued calls end cancelled with it (runs.finish_run)
