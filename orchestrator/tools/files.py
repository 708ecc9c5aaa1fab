"""Read-only tools: read_file, list_dir, glob, grep."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from orchestrator.tools.base import Tool, ToolContext, ToolInputError, ToolResult, relative, resolve_path

SKIPPED_DIRECTORIES = {".git", "node_modules", "__pycache__", ".venv"}
WORKTREES = (".boocode", "worktrees")  # workflow agents' own checkouts (orchestrator.agent.worktree)
MAX_LIST_ENTRIES = 1000
MAX_GREP_MATCHES = 200


def read_file(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    path = resolve_path(context, arguments["path"])
    if not path.is_file():
        raise ToolInputError(f"{arguments['path']!r} is not a file")
    offset = arguments.get("offset", 1)
    limit = arguments.get("limit")
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise ToolInputError(f"{arguments['path']!r} looks like a binary file")
    lines = data.decode("utf-8", errors="replace").splitlines()
    end = len(lines) if limit is None else min(len(lines), offset - 1 + limit)
    chosen = lines[offset - 1:end]
    text = "\n".join(f"{number:>6}\t{line}" for number, line in enumerate(chosen, start=offset))
    if len(text.encode()) > context.max_read_bytes:
        raise ToolInputError(f"that range is larger than {context.max_read_bytes} bytes; ask for fewer lines")
    note = f"[lines {offset}-{end} of {len(lines)}]" if (offset > 1 or end < len(lines)) else ""
    return ToolResult(content=(text + ("\n" + note if note else "")) if chosen else f"[no lines: file has {len(lines)}]",
                      data={"path": relative(context, path), "lines": len(lines)})


def list_dir(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    path = resolve_path(context, arguments.get("path", "."))
    if not path.is_dir():
        raise ToolInputError(f"{arguments.get('path', '.')!r} is not a directory")
    entries = sorted(path.iterdir(), key=lambda entry: entry.name)
    names = [entry.name + ("/" if entry.is_dir() else "") for entry in entries[:MAX_LIST_ENTRIES]]
    if len(entries) > MAX_LIST_ENTRIES:
        names.append(f"[{len(entries) - MAX_LIST_ENTRIES} more entries not shown]")
    return ToolResult(content="\n".join(names) or "[empty directory]", data={"count": len(entries)})


def _skipped(entry: Path, base: Path, root: Path) -> bool:
    if any(part in SKIPPED_DIRECTORIES for part in entry.relative_to(base).parts):
        return True
    parts = entry.relative_to(root).parts if entry.is_relative_to(root) else ()
    return parts[:2] == WORKTREES


def _walk(base: Path, root: Path) -> list[Path]:
    return [entry for entry in sorted(base.rglob("*")) if not _skipped(entry, base, root)]


def glob_files(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    base = resolve_path(context, arguments.get("path", "."))
    pattern = arguments["pattern"]
    if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        raise ToolInputError("pattern must be relative to the search path and must not contain '..'")
    root = context.root.resolve()
    matches = []
    for match in sorted(base.glob(pattern)):
        if _skipped(match, base, root):
            continue
        real = match.resolve()
        if real != root and root not in real.parents:
            continue  # a symlink leading out of the project
        matches.append(relative(context, match))
    shown = matches[:MAX_LIST_ENTRIES]
    extra = [f"[{len(matches) - len(shown)} more matches not shown]"] if len(matches) > len(shown) else []
    return ToolResult(content="\n".join(shown + extra) or "[no matches]", data={"count": len(matches)})


def grep(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    try:
        pattern = re.compile(arguments["pattern"], 0 if arguments.get("case_sensitive", True) else re.IGNORECASE)
    except re.error as error:
        raise ToolInputError(f"pattern is not a valid regular expression: {error}") from None
    base = resolve_path(context, arguments.get("path", "."))
    file_glob = arguments.get("glob")
    root = context.root.resolve()
    files = [base] if base.is_file() else [entry for entry in _walk(base, root) if entry.is_file()]
    results: list[str] = []
    total = 0
    for path in files:
        if file_glob and not path.match(file_glob):
            continue
        real = path.resolve()
        if real != root and root not in real.parents:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if b"\x00" in data[:8192]:
            continue
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            if pattern.search(line):
                total += 1
                if len(results) < MAX_GREP_MATCHES:
                    results.append(f"{relative(context, path)}:{number}: {line[:400]}")
    if total > len(results):
        results.append(f"[{total - len(results)} more matches not shown; narrow the pattern or path]")
    return ToolResult(content="\n".join(results) or "[no matches]", data={"matches": total})


PATH = {"type": "string", "description": "A path relative to the project root."}

TOOLS = [
    Tool("read_file", "Read a text file, with line numbers. Use offset (first line, 1-based) and limit (number "
                      "of lines) for large files.",
         {"type": "object", "properties": {"path": PATH, "offset": {"type": "integer", "minimum": 1},
                                           "limit": {"type": "integer", "minimum": 1, "maximum": 5000}},
          "required": ["path"], "additionalProperties": False}, read_file),
    Tool("list_dir", "List a directory's entries (directories end with '/').",
         {"type": "object", "properties": {"path": PATH}, "additionalProperties": False}, list_dir),
    Tool("glob", "Find files by glob pattern, e.g. '**/*.py', relative to path (default: the project root).",
         {"type": "object", "properties": {"pattern": {"type": "string", "minLength": 1}, "path": PATH},
          "required": ["pattern"], "additionalProperties": False}, glob_files),
    Tool("grep", "Search file contents with a regular expression; prints path:line: text.",
         {"type": "object", "properties": {"pattern": {"type": "string", "minLength": 1}, "path": PATH,
                                           "glob": {"type": "string", "description": "Only files matching this glob"},
                                           "case_sensitive": {"type": "boolean"}},
          "required": ["pattern"], "additionalProperties": False}, grep),
]
