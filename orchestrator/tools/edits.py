"""Mutating file tools: edit_file, create_file, delete_file. Each returns a unified diff.

Like the read tools, each opens its file beneath the root in one step (`tools.paths`) and then works
on the descriptor: the text read and the text written are the same inode, so a path swapped in
between cannot redirect the write. Hard-linked files are refused (another name may be outside).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from orchestrator.tools.base import Tool, ToolContext, ToolInputError, ToolResult, unified_diff
from orchestrator.tools.paths import O_PATH, Root, explain, opened, require_single_link


def read_descriptor(fd: int, raw: str, limit: int) -> str:
    data = os.pread(fd, limit + 1, 0)
    if b"\x00" in data[:8192]:
        raise ToolInputError(f"{raw!r} looks like a binary file")
    if len(data) > limit:
        raise ToolInputError(f"{raw!r} is larger than {limit} bytes; read it in line ranges with offset/limit")
    return data.decode("utf-8", errors="replace")


def write_descriptor(fd: int, text: str) -> None:
    data = text.encode()
    os.ftruncate(fd, 0)
    written = 0
    while written < len(data):
        written += os.pwrite(fd, data[written:], written)


def edit_file(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    raw = arguments["path"]
    old_text, new_text = arguments["old_text"], arguments["new_text"]
    if old_text == new_text:
        raise ToolInputError("old_text and new_text are the same; nothing to change")
    with Root(context.root) as root:
        name = root.relative(raw)
        try:
            fd = root.open(name, os.O_RDWR | os.O_NONBLOCK)
        except FileNotFoundError:
            raise ToolInputError(f"{raw!r} does not exist; use create_file for a new file") from None
        except OSError as error:
            raise explain(error, raw) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ToolInputError(f"{raw!r} is not a file")
            require_single_link(info, raw)
            before = read_descriptor(fd, raw, context.max_read_bytes * 4)
            count = before.count(old_text)
            if count == 0:
                raise ToolInputError(f"old_text was not found in {raw}; read the file and copy the exact text, "
                                     "including whitespace")
            if count > 1 and not arguments.get("replace_all", False):
                raise ToolInputError(f"old_text appears {count} times in {raw}; include more surrounding lines "
                                     "to make it unique, or set replace_all")
            after = before.replace(old_text, new_text)
            write_descriptor(fd, after)
        finally:
            os.close(fd)
    diff = unified_diff(name, before, after)
    return ToolResult(content=f"edited {name} ({count} replacement{'s' if count > 1 else ''})\n{diff}", diff=diff,
                      data={"path": name, "replacements": count})


def open_for_create(root: Root, name: str, raw: str, overwrite: bool, limit: int) -> tuple[int, str | None]:
    """(descriptor to write, the text it had or None when new), beneath the root."""
    try:
        return root.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NONBLOCK, 0o644), None
    except OSError as error:
        if error.errno != errno.EEXIST:
            raise explain(error, raw) from None
    try:
        fd = root.open(name, os.O_RDWR | os.O_NONBLOCK)
    except OSError as error:
        raise explain(error, raw) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ToolInputError(f"{raw!r} is not a regular file")
        require_single_link(info, raw)
        before = read_descriptor(fd, raw, limit)
        if not overwrite:
            raise ToolInputError(f"{raw!r} already exists; use edit_file, or set overwrite to replace it")
    except BaseException:
        os.close(fd)
        raise
    return fd, before


def create_file(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    raw, content = arguments["path"], arguments["content"]
    with Root(context.root) as root:
        name = root.relative(raw)
        try:
            os.close(root.parent(name, create=True)[0])  # make the missing parent directories, beneath the root
        except OSError as error:
            raise explain(error, raw) from None
        fd, before = open_for_create(root, name, raw, arguments.get("overwrite", False), context.max_read_bytes * 4)
        try:
            write_descriptor(fd, content)
        finally:
            os.close(fd)
    diff = unified_diff(name, before, content)
    return ToolResult(content=f"{'overwrote' if before is not None else 'created'} {name}\n{diff}", diff=diff,
                      data={"path": name, "created": before is None})


def delete_file(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    raw = arguments["path"]
    with Root(context.root) as root:
        name = root.relative(raw)
        if name == ".":
            raise ToolInputError(f"{raw!r} is a directory; delete_file removes single files")
        # The target must resolve beneath the root (a symlink leading out is refused, not unlinked).
        with opened(root, raw, O_PATH) as (_, info, _name):
            if stat.S_ISDIR(info.st_mode):
                raise ToolInputError(f"{raw!r} is a directory; delete_file removes single files")
        try:
            parent, final = root.parent(name)
        except OSError as error:
            raise explain(error, raw) from None
        try:
            entry = os.stat(final, dir_fd=parent, follow_symlinks=False)
            before: str | None = None
            if stat.S_ISREG(entry.st_mode):
                fd = os.open(final, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
                try:
                    before = read_descriptor(fd, raw, context.max_read_bytes * 4)
                except ToolInputError:
                    before = None  # binary or huge: removed without a content diff
                finally:
                    os.close(fd)
            elif stat.S_ISDIR(entry.st_mode):
                raise ToolInputError(f"{raw!r} is a directory; delete_file removes single files")
            os.unlink(final, dir_fd=parent)
        except OSError as error:
            raise explain(error, raw) from None
        finally:
            os.close(parent)
    diff = unified_diff(name, before, None) if before is not None else f"deleted {name} (binary, large or a link)\n"
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
