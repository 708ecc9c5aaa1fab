"""Run lifecycle through the API and a real worker: messages queue runs, cancel stops work promptly."""

from __future__ import annotations

import time

from tests.support import Api, wait_for


def test_posting_a_message_queues_an_agent_run(api: Api, chat: dict, worker) -> None:  # type: ignore[no-untyped-def]
    posted = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "fix the bug"}, expected=202)
    assert posted["run"]["kind"] == "agent" and posted["run"]["status"] == "queued"
    assert posted["message"]["run_id"] == posted["run"]["id"]
    messages = api.ok("GET", f"/api/sessions/{chat['id']}/messages")["messages"]
    assert [message["parts"] for message in messages] == [[{"type": "text", "text": "fix the bug"}]]
    # This stack configures no model: the run fails with a message that says what to set.
    final = api.wait_for_run(posted["run"]["id"], ("failed",))
    assert final["error"]["code"] == "no_model_provider" and "BOOCODE_MODEL_BASE_URL" in final["error"]["message"]


def test_probe_runs_are_listed_and_journaled(api: Api, project: dict, chat: dict, worker) -> None:  # type: ignore[no-untyped-def]
    run = api.ok("POST", f"/api/sessions/{chat['id']}/probes", {"steps": 3, "step_seconds": 0}, expected=202)["run"]
    final = api.wait_for_run(run["id"])
    assert final["result"] == {"steps": 3, "served_from_journal": 0}
    steps = api.ok("GET", f"/api/runs/{run['id']}/steps")["steps"]
    assert [(step["step_key"], step["status"], step["output"]) for step in steps] == [
        (f"probe/{index}", "finished", {"index": index}) for index in range(3)]
    listed = api.ok("GET", f"/api/projects/{project['id']}/runs?status=completed")["runs"]
    assert run["id"] in {item["id"] for item in listed}
    assert api.ok("GET", f"/api/sessions/{chat['id']}/runs?status=running")["runs"] == []


def test_cancel_stops_a_running_run_promptly(api: Api, chat: dict, worker, settings) -> None:  # type: ignore[no-untyped-def]
    run = api.ok("POST", f"/api/sessions/{chat['id']}/probes", {"steps": 200, "step_seconds": 0.1})["run"]
    wait_for(lambda: len(api.ok("GET", f"/api/runs/{run['id']}/steps")["steps"]) >= 3, 30, message="run started")
    cancelled = api.ok("POST", f"/api/runs/{run['id']}/cancel")["run"]
    assert cancelled["status"] == "cancelled"
    # The holder notices at its next lease renewal (every lease_seconds / 3) and stops.
    time.sleep(settings.lease_seconds)
    settled = len(api.ok("GET", f"/api/runs/{run['id']}/steps")["steps"])
    time.sleep(settings.lease_seconds)
    assert len(api.ok("GET", f"/api/runs/{run['id']}/steps")["steps"]) == settled < 200
    final = api.ok("GET", f"/api/runs/{run['id']}")["run"]
    assert final["status"] == "cancelled" and final["error"]["code"] == "cancelled"
    finished = [event for event in api.ok("GET", f"/api/sessions/{chat['id']}/events?limit=500")["events"]
                if event["type"] == "run.finished" and event["run_id"] == run["id"]]
    assert len(finished) == 1
    # the worker is free again
    follow_up = api.ok("POST", f"/api/sessions/{chat['id']}/probes", {"steps": 1, "step_seconds": 0})["run"]
    api.wait_for_run(follow_up["id"])
