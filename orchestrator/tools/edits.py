"""Mutating file tools: edit_file, create_file, delete_file. Each returns a unified diff."""

from __future__ import annotations

from typing import Any

from orchestrator.tools.base import (Tool, ToolContext, ToolInputError, ToolResult, read_text, relative, resolve_path,
                                     unified_diff)


def edit_file(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    path = resolve_path(context, arguments["path"])
    if not path.is_file():
        raise ToolInputError(f"{arguments['path']!r} does not exist; use create_file for a new file")
    old_text, new_text = arguments["old_text"], arguments["new_text"]
    if old_text == new_text:
        raise ToolInputError("old_text and new_text are the same; nothing to change")
    before = read_text(path, context.max_read_bytes * 4)
    count = before.count(old_text)
    if count == 0:
        raise ToolInputError(f"old_text was not found in {arguments['path']}; read the file and copy the exact text, "
                             "including whitespace")
    if count > 1 and not arguments.get("replace_all", False):
        raise ToolInputError(f"old_text appears {count} times in {arguments['path']}; include more surrounding lines "
                             "to make it unique, or set replace_all")
    after = before.replace(old_text, new_text)
    path.write_text(after)
    name = relative(context, path)
    diff = unified_diff(name, before, after)
    return ToolResult(content=f"edited {name} ({count} replacement{'s' if count > 1 else ''})\n{diff}", diff=diff,
                      data={"path": name, "replacements": count})


def create_file(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    path = resolve_path(context, arguments["path"])
    if path.is_dir():
        raise ToolInputError(f"{arguments['path']!r} is a directory")
    before = read_text(path, context.max_read_bytes * 4) if path.exists() else None
    if before is not None and not arguments.get("overwrite", False):
        raise ToolInputError(f"{arguments['path']!r} already exists; use edit_file, or set overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(arguments["content"])
    name = relative(context, path)
    diff = unified_diff(name, before, arguments["content"])
    return ToolResult(content=f"{'overwrote' if before is not None else 'created'} {name}\n{diff}", diff=diff,
                      data={"path": name, "created": before is None})


def delete_file(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    path = resolve_path(context, arguments["path"])
    if path == context.root.resolve() or path.is_dir():
        raise ToolInputError(f"{arguments['path']!r} is a directory; delete_file removes single files")
    if not path.is_file():
        raise ToolInputError(f"{arguments['path']!r} does not exist")
    try:
        before: str | None = read_text(path, context.max_read_bytes * 4)
    except ToolInputError:
        before = None  # binary or huge: removed without a content diff
    path.unlink()
    name = relative(context, path)
    diff = unified_diff(name, before, None) if before is not None else f"deleted {name} (binary or large)\n"
    return ToolResult(content=f"deleted {name}\n{diff}", diff=diff, data={"path": name})


PATH = {"type": "string", "description": "A path relative to the project root."}

TOOLS = [
    Tool("edit_file", "Replace exact text in a file. old_text must match exactly once (or set replace_all).",
         {"type": "object", "properties": {"path": PATH, "old_text": {"type": "string", "minLength": 1},
                                           "new_text": {"type": "string"}, "replace_all": {"type": "boolean"}},
          "required": ["path", "old_text", "new_text"], "additionalProperties": False}, edit_file, mutating=True),
    Tool("create_file", "Create a file with the given content (parent directories are created).",
         {"type": "object", "properties": {"path": PATH, "content": {"type": "string"},
                                           "overwrite": {"type": "boolean"}},
          "required": ["path", "content"], "additionalProperties": False}, create_file, mutating=True),
    Tool("delete_file", "Delete one file.",
         {"type": "object", "properties": {"path": PATH}, "required": ["path"], "additionalProperties": False},
         delete_file, mutating=True, dangerous=True),
]
