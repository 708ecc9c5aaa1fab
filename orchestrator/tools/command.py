"""run_command: a program with arguments, no shell, inside the project, in the sandbox.

The process runs in `orchestrator.sandbox`: its own PID, IPC, UTS and network namespaces, the system
read-only, the run's root the only writable place, a private /tmp, an environment built from
scratch, resource limits; nothing of it outlives the command. The working directory is opened
beneath the root first (`tools.paths`), so `cwd` cannot name a place outside. On timeout or cancel
the sandbox is killed whole. Output beyond the cap is cut with a marker saying how much was dropped.
"""

from __future__ import annotations

import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator.tools.base import Tool, ToolContext, ToolInputError, ToolResult
from orchestrator.tools.environments import command_environment
from orchestrator.tools.paths import Root, opened

MAX_TIMEOUT_SECONDS = 600
MISSING_PROGRAM = b"bwrap: execvp "  # what bubblewrap says when it cannot start the program


def _capped(data: bytes, cap: int) -> str:
    if len(data) <= cap:
        return data.decode("utf-8", errors="replace")
    return data[:cap].decode("utf-8", errors="replace") + f"\n[output truncated: {len(data) - cap} more bytes]"


def run_command(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    argv = arguments["argv"]
    if any("\x00" in part for part in argv):
        raise ToolInputError("argv must not contain NUL bytes")
    with Root(context.root) as root:
        with opened(root, arguments.get("cwd", "."), os.O_RDONLY | os.O_DIRECTORY) as (_, info, relative):
            if not stat.S_ISDIR(info.st_mode):
                raise ToolInputError(f"cwd {arguments.get('cwd')!r} is not a directory")
        root_path, cwd = root.path, root.path if relative == "." else root.path / relative
    timeout = arguments.get("timeout_seconds", 60)
    found = command_environment(root_path, context.policy)
    search_path = ":".join([*found.path_first, context.sandbox.tool_path])
    environment = context.sandbox.environment(root_path, {"PATH": search_path})
    if any(entry.endswith(("/.venv/bin", "/venv/bin")) for entry in found.path_first):
        environment["VIRTUAL_ENV"] = str(Path(found.path_first[0]).parent)
    with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors:
        try:
            process = context.sandbox.start(argv, root_path, cwd, stdout=output, stderr=errors,
                                            network=context.network, environment=environment,
                                            read_only=found.read_only)
        except FileNotFoundError:
            raise ToolInputError(f"program {argv[0]!r} was not found on PATH") from None
        except PermissionError:
            raise ToolInputError(f"program {argv[0]!r} is not executable") from None
        timed_out = stopped = False
        deadline = time.monotonic() + timeout
        try:
            while process.wait(min(0.25, max(deadline - time.monotonic(), 0.01))) is None:
                timed_out = time.monotonic() >= deadline
                stopped = context.should_stop is not None and context.should_stop()
                if timed_out or stopped:
                    break
        finally:
            process.kill()  # the namespace, the process group and the cgroup: nothing outlives the command
        exit_code = process.popen.returncode
        half = context.max_output_bytes // 2
        output.seek(0)
        errors.seek(0)
        raw_stderr = errors.read()
        stdout, stderr = _capped(output.read(), half), _capped(raw_stderr, half)
    if not (timed_out or stopped) and exit_code != 0 and raw_stderr.startswith(MISSING_PROGRAM):
        raise ToolInputError(f"program {argv[0]!r} was not found on PATH ({search_path}) or is not executable. "
                             "A project's own tools are found in .venv/bin or venv/bin, or in the folders its "
                             'policy lists under "path" (boocode project policy); the server\'s PATH is '
                             "BOOCODE_TOOL_PATH")
    if stopped:
        status = "stopped: the run was cancelled (killed)"
    elif timed_out:
        status = f"timed out after {timeout}s (killed)"
    else:
        status = f"exit code {exit_code}"
    content = f"$ {' '.join(argv)}  (in {relative})\n{status}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    return ToolResult(content=content, is_error=timed_out or stopped or exit_code != 0,
                      data={"exit_code": None if timed_out or stopped else exit_code, "timed_out": timed_out,
                            "stopped": stopped})


TOOLS = [
    Tool("run_command", "Run a program with arguments (no shell: pipes and globs are not expanded) inside the "
                        "project, in a sandbox. Reports the exit code, stdout and stderr.",
         {"type": "object", "properties": {
             "argv": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                      "description": "Program and arguments, e.g. [\"pytest\", \"-q\"]"},
             "cwd": {"type": "string", "description": "Working directory relative to the project root"},
             "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_SECONDS}},
          "required": ["argv"], "additionalProperties": False}, run_command, mutating=True, dangerous=True),
]
