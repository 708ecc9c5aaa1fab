"""Agent runs end to end: API -> Celery worker process -> fake model server over HTTP -> tools -> events."""

from __future__ import annotations

import json
import threading

import pytest

from tests.fakes.model_server import FakeModelServer, Reply, deepseek_usage, openai_usage
from tests.support import events_of, messages_of, wait_for


def test_a_multi_turn_run_with_tools(agent, fake: FakeModelServer) -> None:  # type: ignore[no-untyped-def]
    stack, api, chat, root, start_worker = agent
    fake.script(
        Reply(text="Let me read it.", tool_calls=[("read_file", {"path": "README.md"})],
              usage=openai_usage(1500, 20, cached=1024)),
        Reply(tool_calls=[("edit_file", {"path": "README.md", "old_text": "version = 1", "new_text": "version = 2"})],
              usage=deepseek_usage(1700, 25, hit=1408)),
        Reply(text="Bumped the version to 2.", usage=openai_usage(1900, 8, cached=1664)))
    start_worker()
    socket = api.websocket(chat["id"])
    live: list[dict] = []
    run_id: list[str] = []

    def watch() -> None:
        while True:
            frame = json.loads(socket.receive(timeout=60))
            live.append(frame)
            if frame["type"] == "run.finished" and run_id and frame["run_id"] == run_id[0]:
                return

    watcher = threading.Thread(target=watch)
    watcher.start()
    posted = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "bump the version"}, expected=202)
    run_id.append(posted["run"]["id"])
    final = api.wait_for_run(posted["run"]["id"], timeout=60)
    watcher.join(30)
    socket.close()

    assert final["result"] == {"text": "Bumped the version to 2.", "turns": 3}
    assert (root / "README.md").read_text() == "# Demo\nversion = 2\n"
    messages = messages_of(api, chat["id"])
    assert [message["role"] for message in messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    read_call = messages[1]["parts"][1]
    assert messages[1]["parts"][0] == {"type": "text", "text": "Let me read it."} and read_call["name"] == "read_file"
    assert (messages[2]["parts"][0]["tool_call_id"] == read_call["id"]
            and "version = 1" in messages[2]["parts"][0]["content"])
    diff = [part for part in messages[4]["parts"] if part["type"] == "diff"][0]
    assert "-version = 1" in diff["diff"] and "+version = 2" in diff["diff"]

    calls = [event["data"] for event in events_of(api, chat["id"]) if event["type"] == "model_call.finished"]
    assert [(call["usage"]["input_total"], call["usage"]["cache_read"], call["usage"]["uncached"]) for call in calls] \
        == [(1500, 1024, 476), (1700, 1408, 292), (1900, 1664, 236)]
    assert all(call["cost"]["priced"] and call["cost"]["total"] > 0 for call in calls)
    assert calls[0]["cost"]["cache_read"] == pytest.approx(1024 * 0.075 / 1e6)

    # what the model was sent: a stable prefix, and the tool result threaded back by id
    requests = [request["body"] for request in fake.requests]
    assert len(requests) == 3
    assert requests[0]["messages"][0] == requests[2]["messages"][0]  # same system prompt every call
    assert requests[0]["tools"] == requests[2]["tools"]
    second = requests[1]["messages"]
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == read_call["id"]
    assert second[-2]["tool_calls"][0]["function"]["name"] == "read_file"

    # a WebSocket client saw the whole run live, identical to what Postgres holds
    stored = [event for event in events_of(api, chat["id"]) if event["seq"] >= live[0]["seq"]]
    assert live == stored[: len(live)] and live[-1]["type"] == "run.finished"
    assert "".join(event["data"]["text"] for event in live if event["type"] == "text.delta") == \
        "Let me read it.Bumped the version to 2."
    assert "sk-fake-secret" not in json.dumps(stored)


def test_model_failures_and_bad_tool_arguments_are_data(agent, fake: FakeModelServer) -> None:  # type: ignore[no-untyped-def]
    stack, api, chat, root, start_worker = agent
    fake.script(Reply(tool_calls=[("read_file", '{"path": '), ("read_file", {"path": "../../etc/passwd"}),
                                  ("no_such_tool", {})], usage=openai_usage(100, 5)),
                Reply(status=500), Reply(status=500), Reply(status=500), Reply(status=500))
    start_worker()
    posted = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "go"})
    final = api.wait_for_run(posted["run"]["id"], ("failed",), timeout=90)
    assert final["error"]["code"] == "model_unavailable" and "after 4 attempts" in final["error"]["message"]
    messages = messages_of(api, chat["id"])
    results = [message["parts"][0] for message in messages if message["role"] == "tool"]
    assert [result["is_error"] for result in results] == [True, True, True]
    assert "not valid JSON" in results[0]["content"] and "outside the project root" in results[1]["content"]
    assert "no tool named" in results[2]["content"]
    assert messages[-1]["role"] == "assistant" and messages[-1]["parts"][-1]["type"] == "error"


def test_a_follow_up_while_busy_is_queued_and_answered_next(agent, fake: FakeModelServer) -> None:  # type: ignore[no-untyped-def]
    stack, api, chat, root, start_worker = agent
    release = threading.Event()
    fake.script(Reply(text="first answer", hold=release, usage=openai_usage(10, 2)),
                Reply(text="second answer", usage=openai_usage(20, 2)))
    start_worker()
    first = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "first question"})["run"]
    assert fake.holding.wait(30)
    second = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "follow-up"})["run"]
    assert api.run_status(second["id"]) == "queued"
    release.set()
    api.wait_for_run(first["id"])
    api.wait_for_run(second["id"])
    texts = [(message["role"], message["parts"][0].get("text")) for message in messages_of(api, chat["id"])]
    assert sorted(texts) == sorted([("user", "first question"), ("assistant", "first answer"),
                                    ("user", "follow-up"), ("assistant", "second answer")])
    second_request = fake.requests[1]["body"]["messages"]
    assert [(entry["role"], entry["content"]) for entry in second_request[1:]] == [
        ("user", "first question"), ("assistant", "first answer"), ("user", "follow-up")]


def test_cancel_stops_a_streaming_run_promptly(agent, fake: FakeModelServer) -> None:  # type: ignore[no-untyped-def]
    stack, api, chat, root, start_worker = agent
    fake.script(Reply(text="x" * 4000, chunk_size=4, chunk_delay=0.01, usage=openai_usage(10, 1000)))
    worker = start_worker()
    run = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "write a lot"})["run"]
    wait_for(lambda: any(event["type"] == "text.delta" for event in events_of(api, chat["id"])), 30,
             message="streaming")
    api.ok("POST", f"/api/runs/{run['id']}/cancel")
    wait_for(lambda: "outcome=cancelled" in worker.log(), 5, message="the worker to stop the stream")
    assert fake.requests and len(fake.requests) == 1  # stopped mid-stream, not retried
    assert api.run_status(run["id"]) == "cancelled"
    assert [message["role"] for message in messages_of(api, chat["id"])] == ["user"]


def test_step_cap_ends_with_a_clear_summary(agent, fake: FakeModelServer) -> None:  # type: ignore[no-untyped-def]
    stack, api, chat, root, start_worker = agent
    fake.script(*[Reply(tool_calls=[("glob", {"pattern": f"*{index}"})], usage=openai_usage(10, 1))
                  for index in range(6)])
    start_worker()
    run = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "loop forever"})["run"]
    final = api.wait_for_run(run["id"], ("failed",), timeout=60)
    assert final["error"]["code"] == "step_cap_reached" and "BOOCODE_AGENT_MAX_STEPS" in final["error"]["message"]
    assert len(fake.requests) == 6
    last = messages_of(api, chat["id"])[-1]
    assert last["parts"][0]["code"] == "step_cap_reached"


def test_a_model_repeating_the_same_call_is_reminded_then_stopped(agent, fake: FakeModelServer) -> None:  # type: ignore[no-untyped-def]
    stack, api, chat, root, start_worker = agent
    fake.script(*[Reply(tool_calls=[("read_file", {"path": "README.md"})], usage=openai_usage(10, 1))
                  for _ in range(3)])
    start_worker()
    run = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "what version?"})["run"]
    final = api.wait_for_run(run["id"], ("failed",), timeout=60)
    assert final["error"]["code"] == "model_repeating" and "read_file" in final["error"]["message"]
    assert len(fake.requests) == 3
    results = [part for message in messages_of(api, chat["id"]) for part in message["parts"]
               if part["type"] == "tool_result"]
    assert len(results) == 2  # the file was read once; the repeat got a reminder instead of a second read
    assert "version = 1" in results[0]["content"] and results[1]["content"].startswith("not run:")
    assert results[1]["is_error"]
    assert messages_of(api, chat["id"])[-1]["parts"][0]["code"] == "model_repeating"


def test_worker_killed_during_a_model_stream(agent, fake: FakeModelServer) -> None:  # type: ignore[no-untyped-def]
    stack, api, chat, root, start_worker = agent
    release = threading.Event()
    fake.script(Reply(text="half an answer that never finishes", chunk_size=4, hold=release, hold_after=4,
                      usage=openai_usage(10, 5)),
                Reply(text="the whole answer", usage=openai_usage(10, 3)))
    victim = start_worker("victim")
    run = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "answer me"})["run"]
    try:
        assert fake.holding.wait(30)
        victim.kill()
        start_worker("rescuer")
        final = api.wait_for_run(run["id"], timeout=60)
    finally:
        release.set()
    assert final["result"]["text"] == "the whole answer" and final["claims"] >= 2
    assistant = [message for message in messages_of(api, chat["id"]) if message["role"] == "assistant"]
    assert [message["parts"] for message in assistant] == [[{"type": "text", "text": "the whole answer"}]]
    assert len(fake.requests) == 2
    assert [event["type"] for event in events_of(api, chat["id"])].count("run.finished") == 1


def test_worker_killed_during_a_mutating_tool_call(agent, fake: FakeModelServer) -> None:  # type: ignore[no-untyped-def]
    stack, api, chat, root, start_worker = agent
    script = "import time; open('marker.txt', 'a').write('ran\\n'); time.sleep(6)"
    fake.script(Reply(tool_calls=[("run_command", {"argv": ["python3", "-c", script]})], usage=openai_usage(10, 5)),
                Reply(text="I will check the marker before retrying.", usage=openai_usage(30, 8)))
    api.ok("PUT", f"/api/projects/{chat['project_id']}/policy",
           {"rules": [{"tool": "run_command", "decision": "allow"}]})
    victim = start_worker("victim")
    run = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "run the script"})["run"]
    wait_for(lambda: (root / "marker.txt").exists(), 30, message="the command to start")
    victim.kill()
    start_worker("rescuer")
    final = api.wait_for_run(run["id"], timeout=60)
    assert final["result"]["text"] == "I will check the marker before retrying."
    assert (root / "marker.txt").read_text() == "ran\n"  # the command did not run twice
    tool_messages = [message["parts"][0] for message in messages_of(api, chat["id"]) if message["role"] == "tool"]
    assert len(tool_messages) == 1 and tool_messages[0]["interrupted"] and tool_messages[0]["is_error"]
    told_model = fake.requests[1]["body"]["messages"][-1]
    assert told_model["role"] == "tool" and told_model["content"].startswith("interrupted:")
    steps = api.ok("GET", f"/api/runs/{run['id']}/steps")["steps"]
    assert [(step["step_key"], step["status"]) for step in steps] == [
        ("turn/0000/model", "finished"), ("turn/0000/tool/0", "interrupted"), ("turn/0001/model", "finished")]


def test_cancel_kills_a_long_running_command(agent, fake: FakeModelServer) -> None:  # type: ignore[no-untyped-def]
    import os
    import time

    stack, api, chat, root, start_worker = agent
    api.ok("PUT", f"/api/projects/{chat['project_id']}/policy",
           {"rules": [{"tool": "run_command", "decision": "allow"}]})
    script = "import os, time; open('pid.txt', 'w').write(str(os.getpid())); time.sleep(120)"
    fake.script(Reply(tool_calls=[("run_command", {"argv": ["python3", "-c", script], "timeout_seconds": 600})],
                      usage=openai_usage(10, 5)))
    worker = start_worker()
    run = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "wait a long time"})["run"]
    wait_for(lambda: (root / "pid.txt").exists() and (root / "pid.txt").read_text(), 30, message="the command to start")
    # pid.txt holds its PID inside the sandbox's namespace; from outside, find it by its command line
    import psutil

    pid = next(process.pid for process in psutil.process_iter(["cmdline"])
               if process.info["cmdline"] and process.info["cmdline"][:2] == ["python3", "-c"]
               and script in process.info["cmdline"])
    cancelled_at = time.monotonic()
    api.ok("POST", f"/api/runs/{run['id']}/cancel")

    def gone() -> bool:
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True

    wait_for(gone, stack.settings.lease_seconds + 5, message="the command to be killed")
    assert time.monotonic() - cancelled_at < stack.settings.lease_seconds + 5
    wait_for(lambda: "outcome=cancelled" in worker.log(), 10, message="the worker to stop")
    assert api.run_status(run["id"]) == "cancelled"
