"""Talking to a one-request-at-a-time model server (llama.cpp): no retry piles up behind a timed-out call,
the timeout error names the setting, and the warm-up request carries exactly the first turn's prefix.

The slow server here is real HTTP on 127.0.0.1 that answers each request after a delay, one at a time
(as llama-cpp-python's server does), and records when each request arrived and whether its client left.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from orchestrator.llm.client import ModelClient, Provider
from orchestrator.localmodel.warmup import first_turn_request, warm_up
from orchestrator.settings import load_settings
from tests.conftest import new_session
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import WorkerProcess, wait_for

TOOLS = [{"type": "function", "function": {"name": "read_file", "description": "Read a file.", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]


class SlowServer:
    """Answers every chat completion after `delay` seconds, one request at a time (a lock, like llama.cpp)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.arrivals: list[float] = []
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                server.arrivals.append(time.monotonic())
                server.bodies.append(body)
                with server.lock:  # one at a time: a second request waits for the first to finish
                    time.sleep(server.delay)
                    data = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "local",
                                       "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                           "role": "assistant", "content": '{"final": "late"}'}}],
                                       "usage": {"prompt_tokens": 1100, "completion_tokens": 1,
                                                 "total_tokens": 1101}}).encode()
                    try:
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                    except (BrokenPipeError, ConnectionResetError):
                        pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def slow() -> Iterator[SlowServer]:
    server = SlowServer(delay=4.0)
    yield server
    server.stop()


def local_provider(base_url: str, retry_on_timeout: bool) -> Provider:
    return Provider(name="server", base_url=base_url, model="local", tool_mode="json", temperature=0.0,
                    retry_on_timeout=retry_on_timeout)


def test_a_timeout_is_not_retried_against_a_local_server_and_names_the_setting(slow: SlowServer) -> None:
    client = ModelClient(local_provider(slow.base_url, retry_on_timeout=False), max_attempts=4, timeout=1.0,
                         sleep=lambda seconds: None)
    started = time.monotonic()
    result = client.complete([{"role": "user", "content": "hi"}], TOOLS)
    assert time.monotonic() - started < 3.0  # one timeout, not four queued behind each other
    assert result.finish_reason == "error" and result.attempts == 1
    assert result.error["code"] == "model_timeout" and result.error["exception"] == "APITimeoutError"
    assert "BOOCODE_MODEL_TIMEOUT_SECONDS" in result.error["message"] and "within 1s" in result.error["message"]
    time.sleep(slow.delay + 0.5)  # anything the client might still send would have arrived by now
    assert len(slow.arrivals) == 1


def test_a_cloud_provider_still_retries_a_timeout(slow: SlowServer) -> None:
    slow.delay = 1.5
    client = ModelClient(local_provider(slow.base_url, retry_on_timeout=True), max_attempts=2, timeout=0.5,
                         sleep=lambda seconds: None)
    result = client.complete([{"role": "user", "content": "hi"}], TOOLS)
    assert result.attempts == 2 and result.error["code"] == "model_timeout"
    assert "after 2 attempts" in result.error["message"]
    wait_for(lambda: len(slow.arrivals) == 2, 5, 0.05, "the retry to arrive")


def test_a_streamed_call_that_times_out_closes_its_stream(fake: FakeModelServer) -> None:
    hold = threading.Event()
    fake.script(Reply(text="never finished", hold=hold, hold_after=1, usage=openai_usage(10, 2)))
    client = ModelClient(Provider(name="server", base_url=fake.base_url, model="local", retry_on_timeout=False),
                         max_attempts=3, timeout=0.5, sleep=lambda seconds: None)
    try:
        result = client.complete([{"role": "user", "content": "hi"}], [])
    finally:
        hold.set()
    assert result.error["code"] == "model_timeout" and result.attempts == 1 and len(fake.requests) == 1


def test_the_warm_up_request_is_the_first_turns_prefix(fake: FakeModelServer) -> None:
    """What `boocode up` sends at start-up must be byte-identical, up to the project, to a first turn."""
    fake.script(Reply(text="{", usage={"prompt_tokens": 1130, "completion_tokens": 1, "total_tokens": 1131}))
    warmed = warm_up(fake.base_url, "local", timeout=10)
    assert warmed.prompt_tokens == 1130
    body = fake.requests[0]["body"]
    assert body == json.loads(json.dumps(first_turn_request("local")))
    assert body["max_tokens"] == 1 and body["temperature"] == 0.0 and "tools" not in body
    warm_system = body["messages"][0]["content"]

    # a real first turn, through the same client the agent uses, in another project
    fake.script(Reply(text='{"tool": "list_dir", "arguments": {}}', usage=openai_usage(1180, 8)))
    from orchestrator.agent.prompt import system_prompt
    from orchestrator.tools.registry import TOOLS as REGISTRY
    from orchestrator.tools.registry import tool_schemas

    client = ModelClient(local_provider(fake.base_url, retry_on_timeout=False), max_attempts=1)
    client.complete([{"role": "system", "content": system_prompt("demo", "/home/me/demo")},
                     {"role": "user", "content": "What files are here?"}], tool_schemas(list(REGISTRY)),
                    require_tool=True)
    turn = fake.requests[1]["body"]
    turn_system = turn["messages"][0]["content"]
    shared = next(index for index, (a, b) in enumerate(zip(warm_system, turn_system)) if a != b)
    assert warm_system[:shared].endswith('You are BooCode, a coding agent working in the project "')
    assert shared > 0.9 * len(warm_system)  # all but the project's name and root is shared
    assert turn["response_format"] == body["response_format"] and turn["temperature"] == body["temperature"]


def test_a_turn_against_a_slow_local_server_fails_once_with_the_setting_named(
        make_stack, slow: SlowServer, tmp_path: Path) -> None:
    """Through the API and a real worker, with the settings `boocode up` gives the local model."""
    stack = make_stack(model_base_url=slow.base_url, model_name="local", model_tool_mode="json",
                       model_require_tool_first=True, model_temperature=0.0, model_timeout_seconds=1.0,
                       model_retry_on_timeout=False, model_max_attempts=4)
    chat = new_session(stack.api, tmp_path / "demo")
    worker = WorkerProcess(stack.settings, tmp_path, name="slow@localhost").start()
    try:
        run = stack.api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "What files are here?"})["run"]
        final = stack.api.wait_for_run(run["id"], ("completed", "failed"), timeout=60)
        assert final["status"] == "failed", final
        assert final["error"]["code"] == "model_timeout", final["error"]
        assert "BOOCODE_MODEL_TIMEOUT_SECONDS" in final["error"]["message"]
        assert "after 1 attempt)" in final["error"]["message"]
        time.sleep(slow.delay + 0.5)
        assert len(slow.arrivals) == 1  # nothing queued behind the abandoned request
    finally:
        worker.stop()


def test_the_settings_parse() -> None:
    settings = load_settings(environ={"BOOCODE_MODEL_RETRY_ON_TIMEOUT": "false", "BOOCODE_LOCAL_MODEL_THREADS": "1",
                                      "BOOCODE_LOCAL_MODEL_WARM_UP": "off"})
    assert (settings.model_retry_on_timeout, settings.local_model_threads, settings.local_model_warm_up) == (
        False, 1, False)
    assert load_settings(environ={}).model_retry_on_timeout is True
