"""The tool set: stable order (so the prompt prefix stays cacheable), argument validation, execution."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator

from orchestrator.tools import command, edits, files, subagents
from orchestrator.tools.base import Tool, ToolContext, ToolInputError, ToolResult

TOOLS: dict[str, Tool] = {tool.name: tool for tool in [*files.TOOLS, *edits.TOOLS, *command.TOOLS, *subagents.TOOLS]}
# What every agent may be given; the subagent tools only go to a top-level chat agent.
CORE_TOOLS: tuple[str, ...] = tuple(name for name in TOOLS if name not in subagents.NAMES)
_VALIDATORS = {name: Draft202012Validator(tool.parameters) for name, tool in TOOLS.items()}


def tool_schemas(names: list[str] | None = None) -> list[dict[str, Any]]:
    """Schemas in a fixed order (the registry's), whatever order `names` comes in."""
    wanted = set(names) if names is not None else set(TOOLS)
    return [tool.schema() for name, tool in TOOLS.items() if name in wanted]


def parse_arguments(name: str, raw: str) -> dict[str, Any]:
    """The model's argument string as a validated dict, or ToolInputError saying what is wrong."""
    if name not in TOOLS:
        raise ToolInputError(f"there is no tool named {name!r}; available: {', '.join(TOOLS)}")
    try:
        arguments = json.loads(raw or "{}")
    except json.JSONDecodeError as error:
        raise ToolInputError(f"the arguments are not valid JSON ({error.msg} at position {error.pos})") from None
    errors = sorted(_VALIDATORS[name].iter_errors(arguments), key=lambda error: list(error.absolute_path))
    if errors:
        problems = "; ".join(f"{'/'.join(map(str, error.absolute_path)) or 'arguments'}: {error.message}"
                             for error in errors[:5])
        raise ToolInputError(f"invalid arguments for {name}: {problems}")
    return arguments


def run_tool(name: str, raw_arguments: str, context: ToolContext) -> ToolResult:
    try:
        arguments = parse_arguments(name, raw_arguments)
        return TOOLS[name].run(arguments, context)
    except ToolInputError as error:
        return ToolResult(content=f"error: {error}", is_error=True)
    except OSError as error:
        return ToolResult(content=f"error: {error.strerror or error}", is_error=True)
