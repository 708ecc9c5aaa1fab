"""Background subagents as tools: start one and carry on; look at it, read its result, or cancel it.

Only a top-level chat agent gets these (a subagent or a workflow's agent does not start more). The work
is done by the agent's host (`ToolContext.host`), which reaches the database and the queue.
"""

from __future__ import annotations

from typing import Any

from orchestrator.tools.base import AgentHost, Tool, ToolContext, ToolInputError, ToolResult

TASK_ID = {"type": "string", "description": "The task id spawn_subagent returned"}


def _host(context: ToolContext) -> AgentHost:
    if context.host is None:
        raise ToolInputError("background subagents are not available to this agent")
    return context.host


def spawn_subagent(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    return _host(context).spawn_subagent(arguments, context.call_key or "")


def subagent_status(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    return _host(context).subagent_status(arguments.get("task_id"))


def subagent_result(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    return _host(context).subagent_result(arguments["task_id"])


def subagent_cancel(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    return _host(context).subagent_cancel(arguments["task_id"])


TOOLS = [
    Tool("spawn_subagent",
         "Start a background subagent on a self-contained task and get its task id at once; it works in parallel "
         "with you in the same project. Give it everything it needs in the prompt: it does not see this "
         "conversation. When it finishes after you have ended your turn, its result comes to you in a new "
         "message (unless follow_up is false).",
         {"type": "object", "properties": {
             "prompt": {"type": "string", "minLength": 1, "description": "The task, complete and self-contained"},
             "label": {"type": "string", "maxLength": 200, "description": "A short name shown to the user"},
             "agentType": {"type": "string", "description": "A named agent definition, e.g. Explore or reviewer"},
             "model": {"type": "string", "description": "Use this model instead of the default"},
             "follow_up": {"type": "boolean",
                           "description": "Wake me with the result when it finishes (default true)"}},
          "required": ["prompt"], "additionalProperties": False}, spawn_subagent),
    Tool("subagent_status", "The status of one background subagent, or of all started in this session.",
         {"type": "object", "properties": {"task_id": TASK_ID}, "additionalProperties": False}, subagent_status),
    Tool("subagent_result", "The result of a finished background subagent (or 'not finished yet').",
         {"type": "object", "properties": {"task_id": TASK_ID}, "required": ["task_id"],
          "additionalProperties": False}, subagent_result),
    Tool("subagent_cancel", "Cancel a background subagent that is still working.",
         {"type": "object", "properties": {"task_id": TASK_ID}, "required": ["task_id"],
          "additionalProperties": False}, subagent_cancel),
]
NAMES = tuple(tool.name for tool in TOOLS)
