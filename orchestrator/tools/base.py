"""What every tool shares: its declaration, its context, its result, and path confinement.

Paths: a path the model gives is joined to the project root (or taken as is when absolute), then
fully resolved, symlinks included; the result must be the root or inside it. A symlink inside the
project that points outside is therefore refused, as are `..` escapes and absolute paths elsewhere.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol


class ToolInputError(Exception):
    """The call cannot be carried out as asked; the message goes back to the model."""


@dataclass(frozen=True)
class ToolContext:
    root: Path
    tool_path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    max_output_bytes: int = 64 * 1024
    max_read_bytes: int = 256 * 1024
    should_stop: Callable[[], bool] | None = None  # long tools poll this (the run was cancelled)
    # Tools that act on the server rather than the files (the subagent tools) reach it through this.
    host: "AgentHost | None" = None
    call_key: str | None = None  # the journal key of the call being run


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


def resolve_path(context: ToolContext, raw: str) -> Path:
    if not isinstance(raw, str) or not raw.strip():
        raise ToolInputError("path must be a non-empty string")
    if "\x00" in raw:
        raise ToolInputError("path must not contain NUL bytes")
    root = context.root.resolve()
    candidate = Path(raw).expanduser() if Path(raw).is_absolute() else root / raw
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        raise ToolInputError(f"{raw!r} is outside the project root; tools can only use paths inside {root}")
    return resolved


def relative(context: ToolContext, path: Path) -> str:
    root = context.root.resolve()
    return "." if path == root else str(path.relative_to(root))


def unified_diff(relative_path: str, before: str | None, after: str | None) -> str:
    lines = difflib.unified_diff((before or "").splitlines(keepends=True), (after or "").splitlines(keepends=True),
                                 fromfile="/dev/null" if before is None else f"a/{relative_path}",
                                 tofile="/dev/null" if after is None else f"b/{relative_path}")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def read_text(path: Path, limit: int) -> str:
    data = path.read_bytes()[: limit + 1]
    if b"\x00" in data[:8192]:
        raise ToolInputError(f"{path.name} looks like a binary file")
    if len(data) > limit:
        raise ToolInputError(f"{path.name} is larger than {limit} bytes; read it in line ranges with offset/limit")
    return data.decode("utf-8", errors="replace")
