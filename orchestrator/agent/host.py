"""What a chat agent's subagent tools do: start background subagents and watch them.

Each call runs as a journaled tool step of the agent's turn. `spawn_subagent` names its run after the
call's journal key, so if the worker dies between creating the run and recording the call, the
repeated call finds that run instead of starting a second one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator import lifecycle
from orchestrator.agent.types import agent_type_problem, discover_agent_types
from orchestrator.domain.enums import RunStatus
from orchestrator.jobs import SUBAGENT_TASK, task_for_kind
from orchestrator.lifecycle import RunContext
from orchestrator.store import runs, subagents
from orchestrator.store.models import Run
from orchestrator.tools.base import ToolResult


class SubagentHost:
    def __init__(self, context: RunContext, root: Path, limits: subagents.Limits) -> None:
        self.context = context
        self.root = root
        self.limits = limits

    def spawn_subagent(self, arguments: dict[str, Any], call_key: str) -> ToolResult:
        agent_type = arguments.get("agentType")
        if agent_type is not None:
            problem = agent_type_problem(discover_agent_types(self.root)[0], agent_type)
            if problem is not None:
                return ToolResult(content=f"error: {problem}", is_error=True)
        spec = {key: arguments[key] for key in ("label", "agentType", "model") if arguments.get(key)}
        task_id = subagents.task_id_for(self.context.run.id, call_key)
        with self.context.db.transaction() as session:
            runs.check_fence(session, self.context.lease)
            parent = runs.load_run(session, self.context.run.id)
            child, _ = subagents.spawn(session, parent, task_id, arguments["prompt"], spec,
                                       follow_up=arguments.get("follow_up", True))
            queued = child.status == RunStatus.QUEUED
        if queued:
            self.context.enqueue(SUBAGENT_TASK, str(task_id))
        name = f" ({spec['label']})" if spec.get("label") else ""
        wake = ("When it finishes after you have ended your turn, its result comes to you in a new message."
                if arguments.get("follow_up", True) else "Read its result with subagent_result.")
        return ToolResult(content=f"Started background subagent {task_id}{name}. It works in parallel with you; "
                                  f"check it with subagent_status or subagent_result. {wake}",
                          data={"task_id": str(task_id)})

    def subagent_status(self, task_id: str | None) -> ToolResult:
        with self.context.db.transaction() as session:
            if task_id:
                run = subagents.find(session, self.context.run.session_id, task_id)
                if run is None:
                    return self._unknown(task_id)
                found = [run]
            else:
                found = subagents.list_for_session(session, self.context.run.session_id)
            lines = [self._describe(session, run) for run in found]
        return ToolResult(content="\n".join(lines) if lines else "No background subagents in this session.",
                          data={"count": len(lines)})

    def subagent_result(self, task_id: str) -> ToolResult:
        with self.context.db.transaction() as session:
            run = subagents.find(session, self.context.run.session_id, task_id)
            if run is None:
                return self._unknown(task_id)
            if not RunStatus(run.status).is_terminal:
                return ToolResult(content=f"not finished yet: subagent {run.id} is {subagents.state_of(run)}"
                                          f"{self._elapsed(run)}. Check again later, or end your turn: its result "
                                          "comes to you when it finishes.", data={"finished": False})
            subagents.mark_delivered(session, run)
            if run.status == RunStatus.COMPLETED:
                return ToolResult(content=subagents.result_text(run) or "(it finished without an answer)",
                                  data={"finished": True, "status": run.status})
            error = run.error or {}
            return ToolResult(content=f"subagent {run.id} ended {run.status}: {error.get('code', '')}: "
                                      f"{error.get('message', '')}", is_error=True,
                              data={"finished": True, "status": run.status})

    def subagent_cancel(self, task_id: str) -> ToolResult:
        with self.context.db.transaction() as session:
            run = subagents.find(session, self.context.run.session_id, task_id)
            if run is None:
                return self._unknown(task_id)
            if RunStatus(run.status).is_terminal:
                return ToolResult(content=f"subagent {run.id} already ended with status {run.status}",
                                  data={"status": run.status})
            _, going = lifecycle.cancel(session, run.id, self.limits, reason="cancelled by the agent that started it")
            woken = [(waiting.kind, str(waiting.id)) for waiting in going]
        for kind, waiting_id in woken:
            self.context.enqueue(task_for_kind(kind), waiting_id)
        return ToolResult(content=f"Cancelled subagent {task_id}.", data={"status": RunStatus.CANCELLED})

    def _describe(self, session: Any, run: Run) -> str:
        info = subagents.serialize(session, run)
        label = f" {info['label']!r}" if info["label"] else ""
        return (f"{run.id}{label}: {info['state']}{self._elapsed(run)}, {info['tokens']} tokens"
                + (f", error {run.error.get('code')}" if run.error else ""))

    @staticmethod
    def _elapsed(run: Run) -> str:
        seconds = subagents.duration_seconds(run)
        return "" if seconds is None else f" ({seconds:.0f}s)"

    @staticmethod
    def _unknown(task_id: str) -> ToolResult:
        return ToolResult(content=f"error: no background subagent {task_id!r} in this session", is_error=True)
