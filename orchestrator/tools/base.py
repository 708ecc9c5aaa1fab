"""What every tool shares: its declaration, its context, its result.

Paths are confined to the root by `tools.paths` (opened beneath the root in one step); processes
run in `orchestrator.sandbox`. Both come through the context, so a tool cannot forget them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from orchestrator.sandbox import Sandbox


class ToolInputError(Exception):
    """The call cannot be carried out as asked; the message goes back to the model."""


@dataclass(frozen=True)
class ToolContext:
    root: Path
    max_output_bytes: int = 64 * 1024
    max_read_bytes: int = 256 * 1024
    should_stop: Callable[[], bool] | None = None  # long tools poll this (the run was cancelled)
    # Tools that act on the server rather than the files (the subagent tools) reach it through this.
    host: "AgentHost | None" = None
    call_key: str | None = None  # the journal key of the call being run
    sandbox: Sandbox = Sandbox()  # where run_command's processes run (the worker passes its settings' one)
    network: bool = False  # the project's policy asks for the network in commands (if the server allows it)
    policy: dict[str, Any] | None = None  # the project's tool policy (its command PATH entries)


class AgentHost(Protocol):
    """What the running agent offers tools that start and watch background subagents."""

    def spawn_subagent(self, arguments: dict[str, Any], call_key: str) -> "ToolResult": ...
    def subagent_status(self, task_id: str | None) -> "ToolResult": ...
    def subagent_result(self, task_id: str) -> "ToolResult": ...
    def subagent_cancel(self, task_id: str) -> "ToolResult": ...


@dataclass
class ToolResult:
    content: str
    is_error: bool = False
    diff: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"content": self.content, "is_error": self.is_error, "diff": self.diff, "data": self.data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ToolResult":
        return cls(content=data["content"], is_error=data["is_error"], diff=data.get("diff"),
                   data=data.get("data") or {})


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[dict[str, Any], ToolContext], ToolResult]
    mutating: bool = False  # changes the project: never repeated blindly after a crash
    dangerous: bool = False  # goes through the project's approval policy

    def schema(self) -> dict[str, Any]:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


def unified_diff(relative_path: str, before: str | None, after: str | None) -> str:
    lines = difflib.unified_diff((before or "").splitlines(keepends=True), (after or "").splitlines(keepends=True),
                                 fromfile="/dev/null" if before is None else f"a/{relative_path}",
                                 tofile="/dev/null" if after is None else f"b/{relative_path}")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
