"""Workflow runs end to end: REST -> Celery worker processes -> ticks -> child agent runs -> fake model.

The fake model answers by prompt (a `responder`), since a workflow's agents reach it in any order.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import new_session
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import Api, WorkerProcess, wait_for

HEADER = 'export const meta = {name: "t", description: "a test workflow", phases: ["one", "two"]};\n'
DONE = ("completed", "completed_with_failures", "failed", "cancelled")


def last_user_text(body: dict[str, Any]) -> str:
    users = [message for message in body["messages"] if message["role"] == "user"]
    content = users[-1]["content"]
    return content if isinstance(content, str) else " ".join(part.get("text", "") for part in content)


def first_user_text(body: dict[str, Any]) -> str:
    content = next(message for message in body["messages"] if message["role"] == "user")["content"]
    return content if isinstance(content, str) else " ".join(part.get("text", "") for part in content)


class Model:
    """Answers each agent by its prompt: `answers` maps a regex to a text (or a function of the body)."""

    def __init__(self, fake: FakeModelServer) -> None:
        self.fake = fake
        self.answers: list[tuple[re.Pattern[str], Any]] = []
        self.prompts: list[str] = []
        self.lock = threading.Lock()
        fake.responder = self.respond

    def on(self, pattern: str, answer: Any) -> "Model":
        self.answers.insert(0, (re.compile(pattern), answer))
        return self

    def respond(self, body: dict[str, Any]) -> Reply:
        prompt = first_user_text(body)
        with self.lock:
            self.prompts.append(prompt)
        for pattern, answer in self.answers:
            if pattern.search(prompt):
                text = answer(body) if callable(answer) else answer
                return text if isinstance(text, Reply) else Reply(text=text, usage=openai_usage(100, 10))
        return Reply(text=f"answer to: {prompt}", usage=openai_usage(100, 10))

    def count(self, pattern: str) -> int:
        with self.lock:
            return sum(1 for prompt in self.prompts if re.search(pattern, prompt))


@pytest.fixture
def fake() -> FakeModelServer:
    server = FakeModelServer().start()
    yield server
    server.stop()


class Flow:
    def __init__(self, stack: Any, chat: dict, root: Path, tmp: Path, model: Model) -> None:
        self.stack, self.api, self.chat, self.root, self.tmp, self.model = stack, stack.api, chat, root, tmp, model
        self.workers: list[WorkerProcess] = []

    def worker(self, name: str = "wf", **kwargs: Any) -> WorkerProcess:
        process = WorkerProcess(self.stack.settings, self.tmp, name=f"{name}-{len(self.workers)}@localhost",
                                **kwargs).start()
        self.workers.append(process)
        return process

    def start(self, script: str | None = None, expected: int = 202, **body: Any) -> dict:
        if script is not None:
            body["script"] = HEADER + script
        return self.api.ok("POST", f"/api/sessions/{self.chat['id']}/workflows", body, expected=expected)

    def run(self, script: str, timeout: float = 60, **body: Any) -> dict:
        run = self.start(script, **body)["run"]
        return self.wait(run["id"], timeout)

    def wait(self, run_id: str, timeout: float = 60) -> dict:
        self.api.wait_for_run(run_id, DONE, timeout=timeout)
        return self.status(run_id)

    def status(self, run_id: str) -> dict:
        return self.api.ok("GET", f"/api/runs/{run_id}/workflow")


@pytest.fixture
def flow(make_stack, fake: FakeModelServer, tmp_path: Path):  # type: ignore[no-untyped-def]
    stack = make_stack(model_base_url=fake.base_url, model_name="gpt-4o-mini", model_api_key="sk-fake",
                       workflow_concurrency=16)
    root = tmp_path / "root"
    chat = new_session(stack.api, root)
    flow = Flow(stack, chat, root, tmp_path, Model(fake))
    yield flow
    for worker in flow.workers:
        worker.stop()


def agents_by_label(status: dict) -> dict[str, dict]:
    return {agent["label"]: agent for agent in status["agents"]}


def test_sequential_agents_and_a_resume_after_an_edit(flow: Flow) -> None:
    flow.worker()
    script = """
phase("one");
const a = await agent("first step", {label: "a"});
const b = await agent("second step after " + a, {label: "b"});
phase("two");
const c = await agent("third step after " + b, {label: "c"});
log("finished with", c);
return {a, b, c};
"""
    status = flow.run(script)
    assert status["run"]["status"] == "completed", status
    assert status["value"] == {"a": "answer to: first step",
                               "b": "answer to: second step after answer to: first step",
                               "c": "answer to: third step after answer to: second step after answer to: first step"}
    agents = agents_by_label(status)
    assert [agents[label]["phase"] for label in "abc"] == ["one", "one", "two"]
    assert all(agent["tokens"] == 110 and not agent["cached"] for agent in agents.values())
    assert [line["text"] for line in status["logs"] if line["level"] == "info"] == [
        f"finished with {status['value']['c']}"]
    assert flow.model.count("^first step$") == 1

    # edit only the second prompt and resume: the first call comes from the journal
    run_id = status["run"]["id"]
    resumed = flow.api.ok("POST", f"/api/runs/{run_id}/resume",
                          {"script": HEADER + script.replace("second step after", "2nd step after")})
    assert resumed["run"]["status"] == "queued"
    status = flow.wait(run_id)
    assert status["run"]["status"] == "completed", status
    assert flow.model.count("^first step$") == 1
    assert flow.model.count("^2nd step after") == 1 and flow.model.count("^third step after answer to: 2nd") == 1
    agents = {agent["key"]: agent for agent in status["agents"]}
    cached = [agent for agent in agents.values() if agent["cached"]]
    assert [agent["label"] for agent in cached] == ["a"] and status["cached"] == 1
    assert status["pass"] == 2
    # the chat transcript holds none of the agents' messages; each agent's own transcript is there
    assert flow.api.ok("GET", f"/api/sessions/{flow.chat['id']}/messages")["messages"] == []
    child = cached[0]["child_run_id"]
    own = flow.api.ok("GET", f"/api/runs/{child}/messages")["messages"]
    assert [message["role"] for message in own] == ["user", "assistant"]
