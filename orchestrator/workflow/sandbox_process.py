"""Sandbox processes: where workflow JavaScript runs, so no script can crash a web or worker process.

    pool = pool_for(memory_bytes)            # one pool per (process, limits), made after any fork
    process = pool.acquire()                 # an idle process, or a new one (at most `size` alive)
    process.request({"op": ...}, seconds)    # one framed request and its answer, within a deadline
    pool.release(process, reusable)          # back to the idle list, or stopped and forgotten

Each process is `python -I -m orchestrator.workflow.isolate_process`, started by exec (never a fork
of a threaded web or Celery process), with a clean environment (PATH and LANG only), in a session of
its own, its memory limited by RLIMIT_DATA on top of V8's heap limit. It lives for many scripts;
none is started per tick. When it dies (V8's fatal out-of-memory is SIGTRAP; a segfault, the kernel's
OOM killer) the request raises `SandboxError("script_crashed")` naming the signal, and the pool
starts a fresh one the next time it is needed. A request that outlives its deadline (a hang V8's
own timeout missed) kills the process: `script_timeout`.

Errors (one tree): SandboxError(code) — script_syntax, script_timeout, script_memory, script_crashed,
result_not_serialisable (from the state), sandbox_busy, sandbox_error.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from orchestrator.workflow.framing import FrameError, read_frame, write_frame

START_SECONDS = 60.0
SPARE_DATA_BYTES = 768 * 1024 * 1024  # V8 itself, mini-racer and Python, above the script's heap
RETIRE_AFTER_SESSIONS = 1000
# After one of these the process is not trusted again: a terminated isolate, a half-answered request.
NOT_REUSED = {"script_timeout", "script_memory", "script_crashed", "sandbox_error", "sandbox_protocol"}


class SandboxError(Exception):
    """The script broke a limit (time, memory), crashed its sandbox process, or could not be compiled;
    `line` when known, `signal` when the process died of one."""

    def __init__(self, code: str, message: str, line: int | None = None, signal_name: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.line, self.signal = code, message, line, signal_name


def process_data_bytes(memory_bytes: int) -> int:
    """RLIMIT_DATA for a sandbox process whose isolates each have a `memory_bytes` heap limit."""
    return 2 * memory_bytes + SPARE_DATA_BYTES


class SandboxProcess:
    """One child process and its two pipes."""

    def __init__(self, data_bytes: int) -> None:
        self.data_bytes = data_bytes
        self.sessions = 0
        self._stderr = tempfile.TemporaryFile(mode="a+b", prefix="boocode-sandbox-")
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-m", "orchestrator.workflow.isolate_process", "--data-bytes", str(data_bytes)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, close_fds=True, cwd="/",
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, start_new_session=True)
        self.pid = self.process.pid
        assert self.process.stdin is not None and self.process.stdout is not None
        self._in, self._out = self.process.stdin.fileno(), self.process.stdout.fileno()
        try:
            ready = read_frame(self._out, time.monotonic() + START_SECONDS)
        except FrameError as error:
            self.kill()
            raise SandboxError("sandbox_error", f"the sandbox process did not start ({error}): "
                               f"{self._stderr_tail() or 'no output'}") from None
        if ready != {"ready": self.pid}:
            self.kill()
            raise SandboxError("sandbox_error", f"the sandbox process started oddly: {ready!r}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def request(self, message: dict[str, Any], seconds: float) -> Any:
        """Send one request and return its answer's value; SandboxError for an error answer or a death."""
        try:
            write_frame(self._in, message)
            answer = read_frame(self._out, time.monotonic() + seconds)
        except FrameError as error:
            if error.reason == "deadline":
                self.kill()
                raise SandboxError("script_timeout", f"the script's sandbox process did not answer within "
                                   f"{seconds:.0f}s and was stopped "
                                   "(a hang V8's own time limit did not catch)") from None
            raise self._crashed() from None
        if "error" in answer:
            problem = answer["error"]
            raise SandboxError(problem["code"], problem["message"], problem.get("line"))
        return answer["ok"]

    def _crashed(self) -> SandboxError:
        try:
            code = self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.returncode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            how = f"was killed by {name}"
        else:
            name, how = None, f"exited with status {code}"
        detail = self._stderr_tail()
        return SandboxError("script_crashed", f"the script crashed its sandbox process, which {how}"
                            + (f" ({detail})" if detail else "")
                            + "; only that process was lost: the run fails, the worker carries on", signal_name=name)

    def _stderr_tail(self) -> str:
        """The line V8 wrote when it gave up (e.g. "Fatal JavaScript out of memory: …"), if any."""
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(size - 65536, 0))
            lines = self._stderr.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        found = [line.strip(" #") for line in lines if "fatal" in line.lower() or "out of memory" in line.lower()]
        return (found[0] if found else "")[:300]

    def clear_stderr(self) -> None:
        self._stderr.truncate(0)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.close_pipes()

    def close_pipes(self) -> None:
        for stream in (self.process.stdin, self.process.stdout, self._stderr):
            if stream is None:
                continue
            try:
                stream.close()
            except OSError:
                pass


class SandboxPool:
    """At most `size` processes for this process's scripts; idle ones are kept and reused."""

    def __init__(self, size: int, data_bytes: int) -> None:
        self.size, self.data_bytes = max(size, 1), data_bytes
        self._idle: list[SandboxProcess] = []
        self._members: set[SandboxProcess] = set()  # idle and busy
        self._alive = 0
        self._changed = threading.Condition()

    def acquire(self, wait_seconds: float = 30.0) -> SandboxProcess:
        deadline = time.monotonic() + wait_seconds
        with self._changed:
            while True:
                while self._idle:
                    process = self._idle.pop()
                    if process.alive():
                        process.clear_stderr()
                        return process
                    process.kill()
                    self._alive -= 1
                    self._members.discard(process)
                if self._alive < self.size:
                    self._alive += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SandboxError("sandbox_busy", f"all {self.size} workflow sandbox processes stayed busy for "
                                       f"{wait_seconds:.0f}s; raise BOOCODE_WORKFLOW_SANDBOX_PROCESSES or try again")
                self._changed.wait(left)
        try:
            process = SandboxProcess(self.data_bytes)
            with self._changed:
                self._members.add(process)
            return process
        except BaseException:
            with self._changed:
                self._alive -= 1
                self._changed.notify()
            raise

    def release(self, process: SandboxProcess, reusable: bool) -> None:
        process.sessions += 1
        keep = reusable and process.alive() and process.sessions < RETIRE_AFTER_SESSIONS
        if not keep:
            process.kill()
        with self._changed:
            if keep:
                self._idle.append(process)
            else:
                self._alive -= 1
                self._members.discard(process)
            self._changed.notify()

    def forget(self) -> None:
        """After a fork: the processes belong to the parent; close our copies of their pipes only."""
        for process in self._members:
            process.close_pipes()
        self._idle, self._members, self._alive = [], set(), 0

    def stop(self) -> None:
        with self._changed:
            idle, self._idle = self._idle, []
            self._alive -= len(idle)
            self._members.difference_update(idle)
        for process in idle:
            process.kill()


_pools: dict[tuple[int, int], SandboxPool] = {}
_pools_lock = threading.Lock()
DEFAULT_SIZE = 2


def pool_for(memory_bytes: int, size: int | None = None) -> SandboxPool:
    """This process's pool for isolates with `memory_bytes` heaps (made on first use, so after a fork)."""
    key = (os.getpid(), process_data_bytes(memory_bytes))
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = SandboxPool(size or DEFAULT_SIZE, key[1])
        elif size is not None:
            pool.size = max(size, 1)
        return pool


def _after_fork_in_child() -> None:
    global _pools_lock
    _pools_lock = threading.Lock()  # another thread may have held it at the fork
    for pool in _pools.values():
        pool.forget()
    _pools.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
