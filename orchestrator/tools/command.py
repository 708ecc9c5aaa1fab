"""run_command: a program with arguments, no shell, inside the project, with a clean environment.

The child's environment is built from scratch (PATH from settings, HOME set to the project root,
a UTF-8 locale): nothing of the server's environment is inherited, so database URLs, API keys and
tokens cannot reach a command. The command runs in its own process group, which is killed whole
on timeout. Output beyond the cap is cut with a marker saying how much was dropped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from typing import Any

from orchestrator.tools.base import Tool, ToolContext, ToolInputError, ToolResult, relative, resolve_path

MAX_TIMEOUT_SECONDS = 600


def tool_environment(context: ToolContext) -> dict[str, str]:
    return {"PATH": context.tool_path, "HOME": str(context.root.resolve()), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "TERM": "dumb", "PYTHONDONTWRITEBYTECODE": "1"}


def _capped(data: bytes, cap: int) -> str:
    if len(data) <= cap:
        return data.decode("utf-8", errors="replace")
    return data[:cap].decode("utf-8", errors="replace") + f"\n[output truncated: {len(data) - cap} more bytes]"


def run_command(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    argv = arguments["argv"]
    cwd = resolve_path(context, arguments.get("cwd", "."))
    if not cwd.is_dir():
        raise ToolInputError(f"cwd {arguments.get('cwd')!r} is not a directory")
    timeout = arguments.get("timeout_seconds", 60)
    with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors:
        try:
            process = subprocess.Popen(argv, cwd=cwd, env=tool_environment(context), stdin=subprocess.DEVNULL,
                                       stdout=output, stderr=errors, start_new_session=True)
        except FileNotFoundError:
            raise ToolInputError(f"program {argv[0]!r} was not found on PATH") from None
        except PermissionError:
            raise ToolInputError(f"program {argv[0]!r} is not executable") from None
        timed_out = stopped = False
        deadline = time.monotonic() + timeout
        while True:
            try:
                exit_code = process.wait(min(0.25, max(deadline - time.monotonic(), 0.01)))
                break
            except subprocess.TimeoutExpired:
                timed_out = time.monotonic() >= deadline
                stopped = context.should_stop is not None and context.should_stop()
                if timed_out or stopped:
                    os.killpg(process.pid, signal.SIGKILL)
                    exit_code = process.wait()
                    break
        half = context.max_output_bytes // 2
        output.seek(0)
        errors.seek(0)
        stdout, stderr = _capped(output.read(), half), _capped(errors.read(), half)
    if stopped:
        status = "stopped: the run was cancelled (killed)"
    elif timed_out:
        status = f"timed out after {timeout}s (killed)"
    else:
        status = f"exit code {exit_code}"
    content = f"$ {' '.join(argv)}  (in {relative(context, cwd)})\n{status}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    return ToolResult(content=content, is_error=timed_out or stopped or exit_code != 0,
                      data={"exit_code": None if timed_out or stopped else exit_code, "timed_out": timed_out,
                            "stopped": stopped})


TOOLS = [
    Tool("run_command", "Run a program with arguments (no shell: pipes and globs are not expanded) inside the "
                        "project. Reports the exit code, stdout and stderr.",
         {"type": "object", "properties": {
             "argv": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                      "description": "Program and arguments, e.g. [\"pytest\", \"-q\"]"},
             "cwd": {"type": "string", "description": "Working directory relative to the project root"},
             "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_SECONDS}},
          "required": ["argv"], "additionalProperties": False}, run_command, mutating=True, dangerous=True),
]
