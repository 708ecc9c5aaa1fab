"""Background subagents end to end: a chat agent's tools -> child runs on the `subagents` queue -> real
Celery worker processes -> the fake model; slots per user and per server; results delivered once.

The fake model tells a chat agent from a subagent by its tools: only a chat agent is offered
`spawn_subagent`.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import pytest

from orchestrator.store import runs as store_runs
from orchestrator.store import subagents as store_subagents
from orchestrator.store import users
from tests.conftest import new_session
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import Api, WorkerProcess, cli_environment, first_user_text, run_cli, text_of, tool_names, wait_for

DONE = ("completed", "failed", "cancelled")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def spawned(body: dict[str, Any]) -> dict[str, str]:
    """label -> task id, from the spawn_subagent results in the conversation."""
    found = {}
    for message in body["messages"]:
        if message["role"] == "tool" and message["content"].startswith("Started background subagent"):
            label = re.search(r"\(([^)]+)\)\. It works", message["content"])
            found[label.group(1) if label else "?"] = UUID.search(message["content"]).group(0)
    return found


def reply(text: str = "", calls: list[tuple[str, Any]] | None = None, **kwargs: Any) -> Reply:
    return Reply(text=text, tool_calls=calls or [], usage=openai_usage(100, 10), **kwargs)


class Model:
    """`chat(body)` answers chat agents, `sub(prompt, body)` answers subagents; every request is kept."""

    def __init__(self, fake: FakeModelServer, chat: Callable[[dict], Reply], sub: Callable[[str, dict], Reply]) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.chat, self.sub = chat, sub
        fake.responder = self.respond

    def respond(self, body: dict[str, Any]) -> Reply:
        with self.lock:
            self.requests.append(body)
        if "spawn_subagent" in tool_names(body):
            return self.chat(body)
        return self.sub(first_user_text(body), body)

    def subagent_requests(self, prompt: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for body in self.requests
                    if "spawn_subagent" not in tool_names(body) and first_user_text(body) == prompt]

    def chat_requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for body in self.requests if "spawn_subagent" in tool_names(body)]


@pytest.fixture
def env(make_stack, fake: FakeModelServer, tmp_path: Path):  # type: ignore[no-untyped-def]
    made: list[WorkerProcess] = []

    def start(**overrides: Any) -> Any:
        stack = make_stack(model_base_url=fake.base_url, model_name="gpt-4o-mini", model_api_key="sk-fake",
                           **overrides)
        stack.fake_server = fake
        stack.chat = new_session(stack.api, tmp_path / f"root-{len(made)}-{uuid.uuid4().hex[:4]}")

        def worker(concurrency: int = 4) -> WorkerProcess:
            process = WorkerProcess(stack.settings, tmp_path, name=f"sub-{uuid.uuid4().hex[:4]}@localhost",
                                    concurrency=concurrency).start()
            made.append(process)
            return process

        stack.worker = worker
        return stack

    yield start
    for process in made:
        process.stop()


def post(api: Api, session_id: str, text: str) -> dict:
    return api.ok("POST", f"/api/sessions/{session_id}/messages", {"text": text}, expected=202)["run"]


def subagent_list(api: Api, session_id: str) -> list[dict]:
    return api.ok("GET", f"/api/sessions/{session_id}/subagents")["subagents"]


def top_level_agent_runs(api: Api, session_id: str) -> list[dict]:
    found = api.ok("GET", f"/api/sessions/{session_id}/runs?limit=500")["runs"]
    return sorted((run for run in found if run["kind"] == "agent" and run["parent_id"] is None),
                  key=lambda run: run["created_at"])


def event_types(api: Api, session_id: str) -> list[dict]:
    return api.ok("GET", f"/api/sessions/{session_id}/events?limit=500")["events"]


def test_a_background_subagent_reports_back_in_a_follow_up_turn(env: Any) -> None:
    gate = threading.Event()

    def chat(body: dict) -> Reply:
        last = body["messages"][-1]
        if last["role"] == "user" and "[background subagent" in text_of(last):
            return reply(f"The subagent reported: {text_of(last).splitlines()[-1]}")
        if last["role"] == "tool" and last["content"].startswith("Started background subagent"):
            return reply(calls=[("subagent_result", {"task_id": spawned(body)["counter"]})])
        if last["role"] == "tool":
            return reply("It is still counting; I will tell you when it reports.")
        return reply(calls=[("spawn_subagent", {"prompt": "count the files", "label": "counter"})])

    stack = env()
    model = Model(stack.fake_server, chat, lambda prompt, body: reply("there are 3 files", hold=gate, hold_after=1))
    stack.worker()
    run = post(stack.api, stack.chat["id"], "delegate the counting")
    stack.api.wait_for_run(run["id"], DONE, timeout=60)
    assert stack.api.run_status(run["id"]) == "completed"

    # the parent finished while its subagent is still working; asking for the result said so
    wait_for(lambda: len(model.subagent_requests("count the files")) == 1, 30, 0.05, "the subagent's model call")
    first_turns = model.chat_requests()
    tool_results = [message["content"] for message in first_turns[-1]["messages"] if message["role"] == "tool"]
    assert tool_results[0].startswith("Started background subagent")
    assert tool_results[1].startswith("not finished yet")
    [listed] = subagent_list(stack.api, stack.chat["id"])
    assert listed["label"] == "counter" and listed["state"] == "running" and listed["result"] is None
    assert listed["parent_run_id"] == run["id"] and not listed["delivered"]
    task_id = listed["task_id"]
    # a subagent is not offered the subagent tools (no nesting)
    [sub_request] = model.subagent_requests("count the files")
    assert not tool_names(sub_request) & {"spawn_subagent", "subagent_status", "subagent_result", "subagent_cancel"}
    assert {"read_file", "edit_file", "run_command"} <= tool_names(sub_request)

    gate.set()
    wait_for(lambda: len(top_level_agent_runs(stack.api, stack.chat["id"])) == 2, 30, 0.1, "a follow-up run")
    follow_up = top_level_agent_runs(stack.api, stack.chat["id"])[1]
    assert follow_up["input"]["subagents"] == [task_id]
    stack.api.wait_for_run(follow_up["id"], DONE, timeout=60)
    assert stack.api.run_status(follow_up["id"]) == "completed"
    final = stack.api.ok("GET", f"/api/runs/{follow_up['id']}")["run"]["result"]["text"]
    assert final == "The subagent reported: there are 3 files"
    # the follow-up's request carries the notice after the whole earlier conversation
    notice = model.chat_requests()[-1]["messages"][-1]
    assert notice["role"] == "user" and f"[background subagent 'counter' ({task_id}) finished" in notice["content"]

    [listed] = subagent_list(stack.api, stack.chat["id"])
    assert listed["status"] == "completed" and listed["result"] == "there are 3 files" and listed["delivered"]
    assert listed["duration_seconds"] > 0 and listed["tokens"] == 110
    events = event_types(stack.api, stack.chat["id"])
    kinds = [event["type"] for event in events if event.get("run_id") == task_id]
    assert kinds.count("subagent.spawned") == 1 and kinds.count("subagent.admitted") == 1
    finished = [event for event in events if event["type"] == "subagent.finished"]
    assert len(finished) == 1 and finished[0]["data"]["result"] == "there are 3 files"
    assert finished[0]["data"]["label"] == "counter" and finished[0]["data"]["status"] == "completed"
    # the chat shows the notice but not the subagent's own conversation, which its run keeps
    transcript = stack.api.ok("GET", f"/api/sessions/{stack.chat['id']}/messages")["messages"]
    texts = [part.get("text", "") for message in transcript for part in message["parts"]]
    assert "count the files" not in texts and any("[background subagent 'counter'" in text for text in texts)
    own = stack.api.ok("GET", f"/api/runs/{task_id}/messages")["messages"]
    assert [message["role"] for message in own] == ["user", "assistant"]


def test_a_result_read_while_working_needs_no_follow_up_and_cancel_stops_a_subagent(env: Any) -> None:
    explorer_done = threading.Event()
    stuck_gate = threading.Event()

    def chat(body: dict) -> Reply:
        last = body["messages"][-1]
        if last["role"] == "user":
            return reply(calls=[
                ("spawn_subagent", {"prompt": "explore quickly", "agentType": "Explore", "label": "explorer"}),
                ("spawn_subagent", {"prompt": "never ends", "label": "stuck"}),
                ("spawn_subagent", {"prompt": "whatever", "agentType": "Nope"})])
        ids = spawned(body)
        if sum(1 for message in body["messages"] if message["role"] == "assistant") == 1:
            explorer_done.wait(30)  # answer only once the explorer has finished
            return reply(calls=[("subagent_result", {"task_id": ids["explorer"]}),
                                ("subagent_cancel", {"task_id": ids["stuck"]}),
                                ("subagent_status", {})])
        return reply("done")

    def sub(prompt: str, body: dict) -> Reply:
        if prompt == "never ends":
            return reply("too late", hold=stuck_gate, hold_after=1)
        return reply("the answer is in src/main.py:3")

    stack = env()
    model = Model(stack.fake_server, chat, sub)
    stack.worker()
    run = post(stack.api, stack.chat["id"], "look around")
    wait_for(lambda: any(item["status"] == "completed" for item in subagent_list(stack.api, stack.chat["id"])),
             30, 0.1, "the explorer to finish")
    explorer_done.set()
    stack.api.wait_for_run(run["id"], DONE, timeout=60)
    stuck_gate.set()
    assert stack.api.run_status(run["id"]) == "completed"

    listed = {item["label"]: item for item in subagent_list(stack.api, stack.chat["id"])}
    assert set(listed) == {"explorer", "stuck"}  # the unknown agentType started nothing
    assert listed["explorer"]["status"] == "completed" and listed["explorer"]["delivered"]
    assert listed["explorer"]["agent_type"] == "Explore"
    assert listed["stuck"]["status"] == "cancelled"
    assert listed["stuck"]["error"]["message"] == "cancelled by the agent that started it"
    # Explore is read-only
    [explorer_request] = model.subagent_requests("explore quickly")
    assert "edit_file" not in tool_names(explorer_request) and "read_file" in tool_names(explorer_request)

    results = [message["content"] for message in model.chat_requests()[1]["messages"] if message["role"] == "tool"]
    assert "unknown agentType 'Nope'" in results[2] and "Explore" in results[2]
    results = [message["content"] for message in model.chat_requests()[2]["messages"] if message["role"] == "tool"]
    assert results[3] == "the answer is in src/main.py:3"
    assert results[4] == f"Cancelled subagent {listed['stuck']['task_id']}."
    assert "explorer': completed" in results[5] and "stuck': cancelled" in results[5]
    # the result was read while the parent worked, and a cancelled subagent is no news: no follow-up turn
    time.sleep(1.0)
    assert len(top_level_agent_runs(stack.api, stack.chat["id"])) == 1


def test_slots_per_user_and_per_server_are_never_exceeded_and_every_subagent_runs(env: Any) -> None:
    # a lost wake-up would leave a subagent queued until the recovery sweep (300 s here): the test would time out
    stack = env(subagent_concurrency=2, subagent_user_concurrency=1, requeue_after_seconds=300.0)

    def chat(body: dict) -> Reply:
        if body["messages"][-1]["role"] == "user":
            return reply(calls=[("spawn_subagent", {"prompt": f"job {index} of {first_user_text(body)}",
                                                    "label": f"job{index}", "follow_up": False})
                                for index in range(3)])
        return reply("started three")

    Model(stack.fake_server, chat, lambda prompt, body: reply(f"did {prompt}", chunk_delay=0.05, chunk_size=2))
    with stack.db.transaction() as session:
        second = users.create_user(session, "second")
        _, token = users.create_token(session, second.id, "tests")
    other = stack.api.as_user(token)
    stack.api.ok("PUT", f"/api/projects/{stack.chat['project_id']}/members/{second.id}", {"role": "member"})
    other_chat = other.ok("POST", f"/api/projects/{stack.chat['project_id']}/sessions", {"title": "b"},
                          expected=201)["session"]
    stack.worker(concurrency=6)
    first = post(stack.api, stack.chat["id"], "alice")
    second_run = post(other, other_chat["id"], "bob")
    seen_waiting = False

    def all_done() -> bool:
        nonlocal seen_waiting
        items = subagent_list(stack.api, stack.chat["id"]) + subagent_list(other, other_chat["id"])
        seen_waiting = seen_waiting or any(item["state"] == "waiting_for_slot" for item in items)
        return len(items) == 6 and all(item["status"] == "completed" for item in items)

    wait_for(all_done, 90, 0.05, "all six subagents to complete")
    for run_id, api in ((first["id"], stack.api), (second_run["id"], other)):
        assert api.run_status(run_id) == "completed"
    assert seen_waiting

    with stack.db.transaction() as session:
        found = [run for run in store_runs.list_runs(session, limit=100) if run.kind == "subagent"]
        spans = [(run.admitted_at, run.finished_at, run.created_by) for run in found]
    assert len(spans) == 6 and all(start is not None and end is not None for start, end, _ in spans)

    def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
        points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                        key=lambda point: (point[0], point[1]))
        level = peak = 0
        for _, change in points:
            level += change
            peak = max(peak, level)
        return peak

    assert most_at_once([(start, end) for start, end, _ in spans]) == 2  # the server's two slots were both used
    for user in {user for _, _, user in spans}:
        assert most_at_once([(start, end) for start, end, owner in spans if owner == user]) == 1


def test_kill_9_during_a_subagent_loses_nothing_and_delivers_once(env: Any) -> None:
    gate = threading.Event()

    def chat(body: dict) -> Reply:
        last = body["messages"][-1]
        if last["role"] == "user" and "[background subagent" in text_of(last):
            return reply("noted")
        if last["role"] == "user":
            return reply(calls=[("spawn_subagent", {"prompt": "long job", "label": "long"})])
        return reply("started it")

    stack = env()
    model = Model(stack.fake_server, chat, lambda prompt, body: reply("long job done", hold=gate, hold_after=1))
    doomed = stack.worker()
    run = post(stack.api, stack.chat["id"], "start the long job")
    stack.api.wait_for_run(run["id"], DONE, timeout=60)
    wait_for(lambda: len(model.subagent_requests("long job")) == 1, 30, 0.05, "the subagent's model call")
    doomed.kill()
    gate.set()  # the killed worker's stream ends unheard
    stack.worker()
    wait_for(lambda: subagent_list(stack.api, stack.chat["id"])[0]["status"] == "completed", 60, 0.1,
             "the subagent to finish on the second worker")
    wait_for(lambda: len(top_level_agent_runs(stack.api, stack.chat["id"])) == 2, 30, 0.1, "the follow-up run")
    follow_up = top_level_agent_runs(stack.api, stack.chat["id"])[1]
    stack.api.wait_for_run(follow_up["id"], DONE, timeout=60)

    [listed] = subagent_list(stack.api, stack.chat["id"])
    assert listed["result"] == "long job done"
    assert len(model.subagent_requests("long job")) == 2  # the interrupted call, then one repeat
    # one subagent run, one notice, one follow-up
    with stack.db.transaction() as session:
        assert sum(1 for item in store_runs.list_runs(session, limit=100) if item.kind == "subagent") == 1
    events = event_types(stack.api, stack.chat["id"])
    assert sum(1 for event in events if event["type"] == "subagent.finished") == 1
    assert len(top_level_agent_runs(stack.api, stack.chat["id"])) == 2
    notices = [message for message in model.chat_requests()[-1]["messages"]
               if message["role"] == "user" and "[background subagent" in text_of(message)]
    assert len(notices) == 1


def test_spawning_twice_from_the_same_call_makes_one_subagent(env: Any) -> None:
    stack = env()
    with stack.db.transaction() as session:
        parent = store_runs.create_run(session, project_id=uuid.UUID(stack.chat["project_id"]),
                                       session_id=uuid.UUID(stack.chat["id"]), kind="agent", input={}, created_by=None)
        task_id = store_subagents.task_id_for(parent.id, "turn/0000/tool/0")
        first, created = store_subagents.spawn(session, parent, task_id, "p", {"label": "x"}, follow_up=True)
        again, created_again = store_subagents.spawn(session, parent, task_id, "p", {"label": "x"}, follow_up=True)
        assert created and not created_again and first.id == again.id == task_id
        assert task_id == store_subagents.task_id_for(parent.id, "turn/0000/tool/0")
        assert task_id != store_subagents.task_id_for(parent.id, "turn/0000/tool/1")
    messages = stack.api.ok("GET", f"/api/runs/{task_id}/messages")["messages"]
    assert len(messages) == 1


def test_rest_and_cli_list_show_cancel_and_retry_subagents(env: Any, tmp_path: Path) -> None:
    gate = threading.Event()

    def chat(body: dict) -> Reply:
        if body["messages"][-1]["role"] == "user":
            return reply(calls=[("spawn_subagent", {"prompt": "slow", "label": "slow", "follow_up": False}),
                                ("spawn_subagent", {"prompt": "quick", "label": "quick", "follow_up": False})])
        return reply("both started")

    stack = env()
    model = Model(stack.fake_server, chat,
                  lambda prompt, body: reply("slow result", hold=gate) if prompt == "slow" else reply("quick result"))
    stack.worker()
    run = post(stack.api, stack.chat["id"], "two jobs")
    stack.api.wait_for_run(run["id"], DONE, timeout=60)
    wait_for(lambda: {item["label"]: item["status"] for item in subagent_list(stack.api, stack.chat["id"])}
             .get("quick") == "completed", 30, 0.1, "the quick subagent")
    wait_for(lambda: len(model.subagent_requests("slow")) == 1, 30, 0.05, "the slow subagent's model call")
    ids = {item["label"]: item["task_id"] for item in subagent_list(stack.api, stack.chat["id"])}

    environment = cli_environment(stack.api.url, stack.api.token, tmp_path)

    def cli(*arguments: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        return run_cli(*arguments, environment=environment, expect=expect)

    listed = cli("subagent", "list", "--session", stack.chat["id"]).stdout
    assert "slow" in listed and "quick result" in listed and "1 running" in listed
    assert cli("subagent", "result", ids["quick"]).stdout.strip() == "quick result"
    assert "not finished yet" in cli("subagent", "result", ids["slow"], expect=75).stderr
    shown = json.loads(cli("subagent", "show", ids["slow"], "--json").stdout)
    assert shown["state"] == "running" and shown["prompt"] == "slow"
    assert "is cancelled" in cli("subagent", "cancel", ids["slow"]).stdout
    assert cli("subagent", "result", ids["slow"], expect=1).stderr.startswith(f"subagent {ids['slow']} cancelled")
    gate.set()

    # retry: a new subagent with the same prompt and options
    retried = cli("subagent", "retry", ids["slow"]).stdout
    new_id = UUID.search(retried.split("(")[0]).group(0)
    assert new_id != ids["slow"]
    wait_for(lambda: stack.api.ok("GET", f"/api/subagents/{new_id}")["subagent"]["status"] == "completed", 30, 0.1,
             "the retried subagent")
    again = stack.api.ok("GET", f"/api/subagents/{new_id}")["subagent"]
    assert again["label"] == "slow" and again["result"] == "slow result"
    # a running subagent cannot be retried; a run of another kind is not a subagent
    assert stack.api.post(f"/api/subagents/{ids['quick']}/retry").status_code == 202
    assert stack.api.get(f"/api/subagents/{run['id']}").status_code == 404
    # another user sees nothing of this session
    with stack.db.transaction() as session:
        stranger = users.create_user(session, "stranger")
        _, token = users.create_token(session, stranger.id, "tests")
    assert stack.api.as_user(token).get(f"/api/sessions/{stack.chat['id']}/subagents").status_code == 404
    assert stack.api.as_user(token).get(f"/api/subagents/{ids['quick']}").status_code == 404
