"""One way a run ends: cancelling from the API sets going what the run's own end would (its
workflow's next tick, the slot it held). Leases are 60 s here, so what the cancelled run's own
worker notices at its next renewal (a third of a lease) or the sweep finds later shows up as a wait
of 20 s or more instead."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.conftest import new_session
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import WorkerProcess, first_user_text, tool_names, wait_for

LEASE = 60.0
BOUND = 10.0  # well under the 20 s a renewal takes to notice the cancel


def test_cancelling_a_workflows_agent_wakes_the_workflow_at_once(make_stack, fake: FakeModelServer,  # type: ignore[no-untyped-def]
                                                                 tmp_path: Path) -> None:
    stack = make_stack(model_base_url=fake.base_url, model_name="gpt-4o-mini", model_api_key="sk-fake",
                       lease_seconds=LEASE, requeue_after_seconds=120)
    hold, asked = threading.Event(), threading.Event()
    fake.responder = lambda body: (asked.set(), hold.wait(60), Reply(text="late", usage=openai_usage(1, 1)))[2]
    chat = new_session(stack.api, tmp_path / "root")
    worker = WorkerProcess(stack.settings, tmp_path, name="endings-wf@localhost").start()
    try:
        script = ('export const meta = {name: "one", description: "d"};\n'
                  'const answer = await agent("slow", {label: "slow"});\nreturn answer === null ? "gone" : answer;\n')
        run = stack.api.ok("POST", f"/api/sessions/{chat['id']}/workflows", {"script": script}, expected=202)["run"]
        child = wait_for(lambda: next((agent["child_run_id"] for agent in stack.api.ok(
            "GET", f"/api/runs/{run['id']}/workflow")["agents"] if agent.get("child_run_id")), None), 30, 0.1,
            "the agent to start")
        wait_for(lambda: stack.api.run_status(run["id"]) in ("queued", "waiting"), 30, 0.1, "the workflow to wait")
        assert asked.wait(30) and stack.api.run_status(child) == "running"  # the agent is mid model call
        cancelled_at = time.monotonic()
        stack.api.ok("POST", f"/api/runs/{child}/cancel")
        final = stack.api.wait_for_run(run["id"], ("completed", "completed_with_failures"), timeout=BOUND)
        assert time.monotonic() - cancelled_at < BOUND
        assert final["result"]["value"] == "gone"
    finally:
        hold.set()
        worker.stop()


def test_cancelling_a_subagent_from_the_api_frees_its_slot_at_once(make_stack, fake: FakeModelServer,  # type: ignore[no-untyped-def]
                                                                   tmp_path: Path) -> None:
    stack = make_stack(model_base_url=fake.base_url, model_name="gpt-4o-mini", model_api_key="sk-fake",
                       lease_seconds=LEASE, requeue_after_seconds=120, subagent_concurrency=1,
                       subagent_user_concurrency=1)
    hold = threading.Event()
    working: dict[str, threading.Event] = {"one": threading.Event(), "two": threading.Event()}

    def respond(body: dict) -> Reply:
        if "spawn_subagent" in tool_names(body):  # the chat agent: start two subagents, then end its turn
            if not any(message["role"] == "tool" for message in body["messages"]):
                return Reply(tool_calls=[("spawn_subagent", {"prompt": "one", "label": "one"}),
                                         ("spawn_subagent", {"prompt": "two", "label": "two"})],
                             usage=openai_usage(10, 2))
            return Reply(text="started both", usage=openai_usage(10, 2))
        working[first_user_text(body)].set()
        hold.wait(60)
        return Reply(text=f"{first_user_text(body)} done", usage=openai_usage(10, 2))

    fake.responder = respond
    chat = new_session(stack.api, tmp_path / "root")
    worker = WorkerProcess(stack.settings, tmp_path, name="endings-sub@localhost", concurrency=4).start()
    try:
        stack.api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "go"}, expected=202)

        def listed() -> dict[str, dict] | None:
            listing = stack.api.ok("GET", f"/api/sessions/{chat['id']}/subagents")["subagents"]
            found = {sub["label"]: sub for sub in listing}
            return found if len(found) == 2 else None

        ids = {label: sub["task_id"] for label, sub in wait_for(listed, 30, 0.1, "two subagents").items()}
        busy = wait_for(lambda: next((label for label, event in working.items() if event.is_set()), None), 30, 0.05,
                        "one subagent at work")
        waiting = "two" if busy == "one" else "one"

        def deferred() -> bool:
            run = stack.api.ok("GET", f"/api/runs/{ids[waiting]}")["run"]
            return run["claims"] >= 1 and run["status"] == "queued"

        wait_for(deferred, 30, 0.05, "the other subagent to wait for the slot")
        assert not working[waiting].is_set()  # one slot
        cancelled_at = time.monotonic()
        stack.api.ok("POST", f"/api/runs/{ids[busy]}/cancel")
        assert working[waiting].wait(BOUND), "the freed slot did not go to the waiting subagent"
        assert time.monotonic() - cancelled_at < BOUND
    finally:
        hold.set()
        worker.stop()
