"""Test helpers: a live server in a thread, real Celery worker processes, an API client, and the
small readers several test modules share (events and messages of a session, what a request to the
fake model said, example workflow arguments).

Everything here talks over real sockets to real services. Behaviour is changed only through
settings (lease length, sweep interval, Redis prefix), never by patching code. A helper used by more
than one test module lives here (fixtures in conftest.py), never imported from another test module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import simple_websocket
from werkzeug.serving import WSGIRequestHandler, make_server

from orchestrator import services
from orchestrator.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
             message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class LiveServer:
    """The Flask app on a real socket (werkzeug's threaded server, which flask-sock supports)."""

    def __init__(self, app: Any) -> None:
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        self.port = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "LiveServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()


class Api:
    """A small client that keeps responses (tests assert on status codes and bodies)."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.token = token
        self.http = httpx.Client(base_url=url, timeout=30)

    def headers(self, token: str | None = None) -> dict[str, str]:
        token = token or self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers(), **kwargs.pop("headers", {})}
        return self.http.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json_body: Any = None, **kwargs: Any) -> httpx.Response:
        if json_body is not None:
            kwargs["json"] = json_body
        return self.request("POST", path, **kwargs)

    def ok(self, method: str, path: str, json_body: Any = None, expected: int | None = None) -> Any:
        kwargs = {"json": json_body} if json_body is not None else {}
        response = self.request(method, path, **kwargs)
        assert response.status_code < 400 and (expected is None or response.status_code == expected), \
            f"{method} {path} -> {response.status_code}: {response.text}"
        return response.json()

    def as_user(self, token: str) -> "Api":
        return Api(self.url, token)

    def websocket(self, session_id: str, since: int = 0, *, subprotocol_token: bool = False) -> Any:
        ws_url = self.url.replace("http://", "ws://") + f"/ws/sessions/{session_id}?since={since}"
        if subprotocol_token:
            return simple_websocket.Client.connect(ws_url, subprotocols=["boocode.v1", f"bearer.{self.token}"])
        return simple_websocket.Client.connect(ws_url, headers=self.headers())

    def run_status(self, run_id: str) -> str:
        return self.ok("GET", f"/api/runs/{run_id}")["run"]["status"]

    def wait_for_run(self, run_id: str, statuses: tuple[str, ...] = ("completed",), timeout: float = 60) -> dict:
        def finished() -> dict | None:
            run = self.ok("GET", f"/api/runs/{run_id}")["run"]
            return run if run["status"] in statuses else None

        return wait_for(finished, timeout, 0.1, f"run {run_id} to reach {statuses}")


class ProcessGroup:
    """A child started in its own process group, logging to `log_path`: stopped with SIGTERM, then
    SIGKILL after 20 s, group and all."""

    process: subprocess.Popen[bytes] | None
    log_path: Path

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class WorkerProcess(ProcessGroup):
    """A real `celery worker` process (prefork pool) in its own process group."""

    def __init__(self, settings: Settings, log_dir: Path, name: str | None = None, concurrency: int = 2) -> None:
        self.settings = settings
        self.name = name or f"test-{uuid.uuid4().hex[:6]}@localhost"
        self.log_path = log_dir / f"worker-{self.name.split('@')[0]}.log"
        self.concurrency = concurrency
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> "WorkerProcess":
        environment = {**os.environ, **self.settings.to_environment()}
        command = [sys.executable, "-m", "celery", "--app", "worker.celery_app", "worker", "--loglevel", "INFO",
                   "--concurrency", str(self.concurrency), "--hostname", self.name, "--without-mingle",
                   "--without-gossip"]
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, env=environment, cwd=REPO, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        client = services.make_redis(self.settings)
        key = services.worker_key(self.settings, self.name)
        wait_for(lambda: client.exists(key) or self._exited(), timeout, 0.1, f"worker {self.name} to start")
        if self._exited():
            raise AssertionError(f"worker exited at start:\n{self.log()}")
        return self

    def _exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def kill(self) -> None:
        """kill -9 the whole worker: main process and every pool child."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()



class BeatProcess(ProcessGroup):
    """A real `celery beat` process (flow schedules) in its own process group, with its own schedule file."""

    def __init__(self, settings: Settings, log_dir: Path, name: str) -> None:
        self.settings, self.name = settings, name
        self.log_path = log_dir / f"beat-{name}.log"
        self.schedule_file = log_dir / f"celerybeat-{name}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> "BeatProcess":
        environment = {**os.environ, **self.settings.to_environment()}
        command = [sys.executable, "-m", "celery", "--app", "worker.celery_app", "beat", "--loglevel", "INFO",
                   "--schedule", str(self.schedule_file)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, env=environment, cwd=REPO, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: "Sending due task" in self.log() or self.process.poll() is not None, timeout, 0.1,
                 f"beat {self.name} to send its first beat")
        if self.process.poll() is not None:
            raise AssertionError(f"beat exited at start:\n{self.log()}")
        return self

    def kill(self) -> None:
        """kill -9 the beat process."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def collect_frames(socket: Any, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    frames = []
    deadline = time.monotonic() + timeout
    while len(frames) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"received {len(frames)} of {count} frames")
        frame = socket.receive(timeout=remaining)
        if frame is not None:
            frames.append(json.loads(frame))
    return frames


BOOCODE = str(Path(sys.executable).parent / "boocode")


def cli_environment(url: str, token: str, home: Path) -> dict[str, str]:
    """A clean environment for the CLI talking to `url` as `token` (nothing of the test process leaks in)."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "BOOCODE_URL": url, "BOOCODE_TOKEN": token,
            "BOOCODE_DATA_DIR": str(home / "cli-data")}


def run_cli(*arguments: str, environment: dict[str, str], expect: int = 0, executable: str = BOOCODE,
            timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `boocode …` as a real process; assert its exit code."""
    result = subprocess.run([executable, *arguments], env=environment, capture_output=True, text=True,
                            timeout=timeout, input=input)
    assert result.returncode == expect, (arguments, result.returncode, result.stdout, result.stderr)
    return result


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebProcess(ProcessGroup):
    """`boocode web` as a real process: gunicorn's gthread worker with BOOCODE_WEB_THREADS threads, as
    production runs it (the in-thread LiveServer starts a thread per connection, so it has no thread
    limit to exhaust)."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings.replace(host="127.0.0.1", port=free_port())
        self.url = self.settings.base_url
        self.log_path = log_dir / f"web-{self.settings.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> "WebProcess":
        environment = {**os.environ, **self.settings.to_environment()}
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen([BOOCODE, "web"], env=environment, cwd=REPO, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self._answers() or self.process.poll() is not None, timeout, 0.1,  # type: ignore[union-attr]
                 f"`boocode web` to answer on {self.url}")
        if self.process.poll() is not None:
            raise AssertionError(f"`boocode web` exited at start:\n{self.log()}")
        return self

    def _answers(self) -> bool:
        try:
            httpx.get(f"{self.url}/health", timeout=2)
            return True
        except httpx.HTTPError:
            return False



# A real 1 x 1 GIF: uploads are decoded before they are accepted, so a bare "GIF89a" header is refused.
TINY_GIF = (b"GIF89a\x01\x00\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")


# ---------------------------------------------------------------- what a session holds, read over the API

def events_of(api: Api, session_id: str) -> list[dict]:
    """Every event of the session, paging through the replay endpoint."""
    found, since = [], 0
    while page := api.ok("GET", f"/api/sessions/{session_id}/events?since={since}&limit=500")["events"]:
        found.extend(page)
        since = page[-1]["seq"]
    return found


def messages_of(api: Api, session_id: str) -> list[dict]:
    return api.ok("GET", f"/api/sessions/{session_id}/messages")["messages"]


# ---------------------------------------------------------------- what a request to the fake model says

def text_of(message: dict[str, Any]) -> str:
    """A chat message's text, whether its content is a string or a list of parts."""
    content = message.get("content") or ""
    return content if isinstance(content, str) else " ".join(part.get("text", "") for part in content)


def first_user_text(body: dict[str, Any]) -> str:
    """The prompt an agent was started with: fake model responders tell agents apart by it."""
    return text_of(next(message for message in body["messages"] if message["role"] == "user"))


def tool_names(body: dict[str, Any]) -> set[str]:
    """The tools the request offered: only a chat agent is offered `spawn_subagent`."""
    return {tool["function"]["name"] for tool in body.get("tools") or []}


# ---------------------------------------------------------------- workflows

WORKFLOW_DONE = ("completed", "completed_with_failures", "failed", "cancelled")

# Arguments each built-in workflow accepts (the catalog tests run every one of them).
CATALOG_ARGS = {
    "deep-research": {"question": "How are runs recovered after a crash?"},
    "review-code": {"target": "src/"},
    "find-issues": {"area": "src/"},
    "multi-review": {"target": "src/app.py"},
    "plan-verify": {"task": "add a --verbose flag"},
    "bounty-hunt": {"hunters": 2},
}


def example_for(schema: dict[str, Any]) -> Any:
    """The smallest value a JSON Schema accepts (enough for the catalog's schemas)."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {name: example_for(schema["properties"][name]) for name in schema.get("required", [])}
    if kind == "array":
        return [example_for(schema.get("items", {"type": "string"})) for _ in range(max(schema.get("minItems", 0), 2))]
    return {"string": "src/app.py", "integer": 7, "number": 1.5, "boolean": True}.get(kind, "x")


def committed_transactions(database_url: str) -> int:
    """pg_stat_database.xact_commit of the database at `database_url`, read from the server's `postgres`
    database (so the reading itself is not counted) once it has stopped moving for 1.5 s: a backend's
    last statistics reach the shared counters only just after it goes idle or exits."""
    import psycopg

    base, _, name = database_url.replace("+psycopg", "").rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        def read() -> int:
            row = connection.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s",
                                     (name.split("?")[0],)).fetchone()
            return int(row[0]) if row else 0

        last, stable_since = read(), time.monotonic()
        while time.monotonic() - stable_since < 1.5:
            time.sleep(0.1)
            now = read()
            if now != last:
                last, stable_since = now, time.monotonic()
        return last


class RunStatusWatcher:
    """Reads a run's status in a transaction it rolls back: an xact_rollback, so watching a run adds
    nothing to the commits `committed_transactions` counts."""

    def __init__(self, database_url: str, run_id: uuid.UUID) -> None:
        import psycopg

        self.connection = psycopg.connect(database_url.replace("+psycopg", ""))
        self.run_id = run_id

    def status(self) -> str:
        row = self.connection.execute("SELECT status FROM runs WHERE id = %s", (self.run_id,)).fetchone()
        self.connection.rollback()
        return str(row[0]) if row else "missing"

    def __enter__(self) -> "RunStatusWatcher":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.connection.close()
