"""Serving a local model: llama-cpp-python's OpenAI-compatible server, on 127.0.0.1 only.

    LocalModelServer(path, port).start()   spawn `python -m llama_cpp.server` in its own process group,
                                            wait until GET /v1/models answers (the model is loaded)
    .base_url                               what BOOCODE_MODEL_BASE_URL becomes for the web and the worker
    .stop()                                 SIGTERM, then SIGKILL after a grace period

The agent runtime talks to it through the same `openai` client as any provider, in json tool mode
(see orchestrator.llm.jsontools) at temperature 0.

Threads: BOOCODE_LOCAL_MODEL_THREADS, default max(1, CPUs // 2), for generation and prompt reading
alike. The model shares the machine with the web, the worker and the agents' commands; on a busy 2-core
machine one thread was 3-5x faster than two (threads that wait for a busy core stall all the others).

What the server does with a request whose client went away (llama-cpp-python 0.3, server/app.py): one
request is computed at a time (a lock); a request still waiting for the lock is dropped when it gets it
("Disconnected from client ... before llm invoked"); a streamed one stops after its next token; a
non-streamed one (json tool mode) runs to its end. Hence no retry after a timeout
(Provider.retry_on_timeout): it would only queue behind the abandoned request.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import httpx

MODEL_ALIAS = "local"


class LocalModelError(Exception):
    pass


def default_threads() -> int:
    """Half the CPUs (at least one): the rest stay free for the web, the worker and the agents' commands."""
    return max(1, (os.cpu_count() or 1) // 2)


def server_available() -> str | None:
    """None when llama-cpp-python with its server extra is installed; otherwise what to install."""
    missing = [name for name in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette")
               if importlib.util.find_spec(name) is None]
    if missing:
        return ("the local model needs llama-cpp-python with its server extra (missing: " + ", ".join(missing)
                + "); ./scripts/setup-venv installs it, or: pip install 'boocode[local]'")
    return None


class LocalModelServer:
    def __init__(self, model_path: Path, port: int, *, context: int = 8192, threads: int | None = None,
                 log_path: Path | None = None) -> None:
        self.model_path = model_path
        self.port = port
        self.context = context
        self.threads = threads or default_threads()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path), "--model_alias",
                MODEL_ALIAS, "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.context),
                "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads)]

    def start(self, timeout: float = 300.0, progress: Callable[[str], None] = lambda line: None) -> None:
        problem = server_available()
        if problem:
            raise LocalModelError(problem)
        if self._answers():
            raise LocalModelError(f"port {self.port} on 127.0.0.1 is already in use; set BOOCODE_LOCAL_MODEL_PORT")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        environment = {key: value for key, value in os.environ.items()
                       if not key.startswith(("BOOCODE_", "DATABASE_URL", "REDIS_URL"))}
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=environment,
                                        start_new_session=True)
        progress(f"loading the local model {self.model_path.name} (this takes a few seconds)…")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                where = f"; see {self.log_path}" if self.log_path else ""
                raise LocalModelError(f"the local model server exited with code {self.process.returncode}{where}")
            if self._answers():
                return
            time.sleep(0.25)
        self.stop()
        raise LocalModelError(f"the local model did not load within {timeout:.0f}s")

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/models", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    def healthy(self) -> bool:
        return self.process is not None and self.process.poll() is None and self._answers()

    def stop(self, grace: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
