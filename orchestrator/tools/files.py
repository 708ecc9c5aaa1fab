"""Read-only tools: read_file, list_dir, glob, grep.

Every file is opened beneath the root through `tools.paths` (no check-then-open race). Walks use
`os.fwalk` without following symlinks, so a directory swapped for a symlink mid-walk is not entered;
a symlinked file met in a walk is skipped, one named directly is followed only while it stays inside.
Reads stream: memory stays bounded by the output cap whatever the file's size, and long reads and
searches give up when the run is cancelled or their time runs out. grep uses RE2, whose matching time
is linear in the input, so no pattern can make it run away.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import time
from contextlib import contextmanager
from io import BufferedReader
from typing import Any, Iterator

import re2

from orchestrator.tools.base import Tool, ToolContext, ToolInputError, ToolResult
from orchestrator.tools.paths import O_PATH, Root, opened, require_single_link

SKIPPED_DIRECTORIES = {".git", "node_modules", "__pycache__", ".venv"}
WORKTREES = (".boocode", "worktrees")  # workflow agents' own checkouts (orchestrator.agent.worktree)
MAX_LIST_ENTRIES = 1000
MAX_GREP_MATCHES = 200
MAX_LINE_PIECE = 64 * 1024  # a line is read in pieces of at most this many bytes
TOOL_SECONDS = 30.0  # a read or search gives up after this long
READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY  # O_NONBLOCK: a FIFO cannot hang the tool


class Clock:
    """Time and cancellation for a long tool: `check()` raises once the run is cancelled or time is up."""

    def __init__(self, context: ToolContext, what: str) -> None:
        self.context, self.what = context, what
        self.deadline = time.monotonic() + TOOL_SECONDS
        self.count = 0

    def check(self) -> None:
        self.count += 1
        if self.count % 256:
            return
        if self.context.should_stop is not None and self.context.should_stop():
            raise ToolInputError(f"{self.what} stopped: the run was cancelled")
        if time.monotonic() > self.deadline:
            raise ToolInputError(f"{self.what} took longer than {TOOL_SECONDS:.0f}s; narrow the path or pattern")


def lines_of(stream: BufferedReader, clock: Clock) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, piece, piece ends its line) in bounded pieces, so a huge line never sits in memory."""
    number = 1
    while True:
        clock.check()
        piece = stream.readline(MAX_LINE_PIECE)
        if not piece:
            return
        ends = piece.endswith(b"\n")
        yield number, piece.rstrip(b"\r\n") if ends else piece, ends
        if ends:
            number += 1


@contextmanager
def open_regular(root: Root, raw: str) -> Iterator[tuple[BufferedReader, str]]:
    with opened(root, raw, READ_FLAGS) as (fd, info, relative):
        if not stat.S_ISREG(info.st_mode):
            raise ToolInputError(f"{raw!r} is not a file")
        require_single_link(info, raw)
        with os.fdopen(os.dup(fd), "rb") as stream:
            yield stream, relative


def read_file(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    raw = arguments["path"]
    offset = arguments.get("offset", 1)
    limit = arguments.get("limit")
    last_wanted = None if limit is None else offset - 1 + limit
    clock = Clock(context, "read_file")
    with Root(context.root) as root:
        with open_regular(root, raw) as (stream, relative):
            if b"\x00" in stream.peek(8192)[:8192]:
                raise ToolInputError(f"{raw!r} looks like a binary file")
            chosen: dict[int, bytearray] = {}
            size = 0
            total = 0
            for number, piece, _ends in lines_of(stream, clock):
                total = number
                if number >= offset and (last_wanted is None or number <= last_wanted):
                    size += len(piece)
                    if size > context.max_read_bytes:
                        raise ToolInputError(f"that range is larger than {context.max_read_bytes} bytes; ask for "
                                             "fewer lines")
                    chosen.setdefault(number, bytearray()).extend(piece)
    end = total if last_wanted is None else min(total, last_wanted)
    text = "\n".join(f"{number:>6}\t{bytes(data).decode('utf-8', errors='replace')}"
                     for number, data in sorted(chosen.items()))
    note = f"[lines {offset}-{end} of {total}]" if (offset > 1 or end < total) else ""
    return ToolResult(content=(text + ("\n" + note if note else "")) if chosen else f"[no lines: file has {total}]",
                      data={"path": relative, "lines": total})


def list_dir(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    raw = arguments.get("path", ".")
    with Root(context.root) as root, opened(root, raw, os.O_RDONLY | os.O_DIRECTORY) as (fd, _, _relative):
        with os.scandir(fd) as listing:
            entries = sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in listing)
    names = [name + ("/" if is_dir else "") for name, is_dir in entries[:MAX_LIST_ENTRIES]]
    if len(entries) > MAX_LIST_ENTRIES:
        names.append(f"[{len(entries) - MAX_LIST_ENTRIES} more entries not shown]")
    return ToolResult(content="\n".join(names) or "[empty directory]", data={"count": len(entries)})


def walk(root: Root, base: str, clock: Clock) -> Iterator[tuple[str, str, int]]:
    """(relative path from the root, file name, fd of its directory) for every file beneath `base`,
    skipping SKIPPED_DIRECTORIES and the agents' worktrees, never following a symlink."""
    with opened(root, base, os.O_RDONLY | os.O_DIRECTORY) as (fd, _, relative):
        prefix = "" if relative == "." else relative + "/"
        for directory, directories, names, directory_fd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
            clock.check()
            here = prefix + directory[2:] + "/" if directory != "." else prefix
            directories[:] = sorted(name for name in directories if name not in SKIPPED_DIRECTORIES
                                    and tuple((here + name).split("/")[:2]) != WORKTREES)
            for name in sorted(names):
                yield here + name, name, directory_fd


def glob_pattern(pattern: str) -> re.Pattern[str]:
    """A glob over '/'-separated paths: `**` is any number of directories; `*`, `?` and `[...]` stay
    within one name."""
    out = []
    for part in pattern.split("/"):
        if part == "**":
            out.append("(?:[^/]+/)*")
            continue
        position = 0
        while position < len(part):
            character = part[position]
            closing = part.find("]", position + 2) if character == "[" else -1
            if character == "*":
                out.append("[^/]*")
            elif character == "?":
                out.append("[^/]")
            elif closing != -1:
                members = part[position + 1:closing]
                out.append("[" + ("^" + members[1:] if members.startswith("!") else members).replace("\\", "\\\\")
                           + "]")
                position = closing
            else:
                out.append(re.escape(character))
            position += 1
        out.append("/")
    return re.compile("".join(out).removesuffix("/") + r"\Z")


def glob_files(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    pattern = arguments["pattern"]
    if pattern.startswith("/") or ".." in pattern.split("/"):
        raise ToolInputError("pattern must be relative to the search path and must not contain '..'")
    matcher = glob_pattern(pattern)
    clock = Clock(context, "glob")
    matches = []
    with Root(context.root) as root:
        base = root.relative(arguments.get("path", "."))
        prefix = "" if base == "." else base + "/"
        for relative, name, directory_fd in walk(root, base, clock):
            if not matcher.match(relative[len(prefix):]):
                continue
            if stat.S_ISLNK(os.stat(name, dir_fd=directory_fd, follow_symlinks=False).st_mode):
                try:  # a symlink is listed only while it leads somewhere inside the root
                    os.close(root.open(relative, O_PATH))
                except OSError:
                    continue
            matches.append(relative)
    shown = matches[:MAX_LIST_ENTRIES]
    extra = [f"[{len(matches) - len(shown)} more matches not shown]"] if len(matches) > len(shown) else []
    return ToolResult(content="\n".join(shown + extra) or "[no matches]", data={"count": len(matches)})


def compile_search(arguments: dict[str, Any]) -> Any:
    options = re2.Options()
    options.case_sensitive = arguments.get("case_sensitive", True)
    options.log_errors = False
    try:
        return re2.compile(arguments["pattern"], options)
    except re2.error as error:
        raise ToolInputError(f"pattern is not a valid regular expression ({error}); grep uses RE2 syntax, which "
                             "has no backreferences or lookaround") from None


def grep(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    pattern = compile_search(arguments)
    file_glob = arguments.get("glob")
    clock = Clock(context, "grep")
    results: list[str] = []
    total = 0

    def search(stream: BufferedReader, relative: str) -> None:
        nonlocal total
        if b"\x00" in stream.peek(8192)[:8192]:
            return
        for number, piece, _ in lines_of(stream, clock):
            line = piece.decode("utf-8", errors="replace")
            if pattern.search(line):
                total += 1
                if len(results) < MAX_GREP_MATCHES:
                    results.append(f"{relative}:{number}: {line[:400]}")

    with Root(context.root) as root:
        base = root.relative(arguments.get("path", "."))
        with opened(root, base, O_PATH) as (_, info, _relative):
            single = stat.S_ISREG(info.st_mode)
        if single:
            with open_regular(root, base) as (stream, relative):
                search(stream, relative)
        else:
            for relative, name, directory_fd in walk(root, base, clock):
                if file_glob and not fnmatch.fnmatchcase(name, file_glob) and \
                        not glob_pattern(file_glob).match(relative):
                    continue
                try:
                    fd = os.open(name, READ_FLAGS | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory_fd)
                except OSError:
                    continue  # a symlink, or gone
                with os.fdopen(fd, "rb") as stream:
                    info = os.fstat(fd)
                    if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                        search(stream, relative)
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
    Tool("grep", "Search file contents with a regular expression (RE2 syntax); prints path:line: text.",
         {"type": "object", "properties": {"pattern": {"type": "string", "minLength": 1}, "path": PATH,
                                           "glob": {"type": "string", "description": "Only files matching this glob"},
                                           "case_sensitive": {"type": "boolean"}},
          "required": ["pattern"], "additionalProperties": False}, grep),
]
