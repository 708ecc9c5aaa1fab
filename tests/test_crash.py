"""Crash tests with real Celery worker processes: kill -9 mid-run, take over, finish exactly once."""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter
from pathlib import Path

from orchestrator import jobs, services
from orchestrator.store import runs
from tests.conftest import new_session
from tests.support import Api, WorkerProcess, wait_for
from web.queue import TaskQueue


def finished_steps(api: Api, run_id: str) -> list[dict]:
    return [step for step in api.ok("GET", f"/api/runs/{run_id}/steps")["steps"] if step["status"] == "finished"]


def run_events(api: Api, session_id: str, run_id: str) -> list[dict]:
    found, since = [], 0
    while True:
        page = api.ok("GET", f"/api/sessions/{session_id}/events?since={since}&limit=500")["events"]
        if not page:
            return [event for event in found if event["run_id"] == run_id]
        found.extend(page)
        since = page[-1]["seq"]


def assert_finished_exactly_once(api: Api, chat: dict, run: dict, steps: int) -> list[dict]:
    journal = api.ok("GET", f"/api/runs/{run['id']}/steps")["steps"]
    assert [step["step_key"] for step in journal] == [f"probe/{index}" for index in range(steps)]
    assert all(step["status"] == "finished" for step in journal)
    events = run_events(api, chat["id"], run["id"])
    types = Counter(event["type"] for event in events)
    assert types["run.finished"] == 1
    assert types["run.started"] == 1
    finished_keys = Counter(event["data"]["step_key"] for event in events if event["type"] == "step.finished")
    assert finished_keys == Counter(f"probe/{index}" for index in range(steps))
    return journal


def test_killed_worker_run_is_taken_over_and_finishes_exactly_once(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    api, chat = stack.api, new_session(stack.api, tmp_path / "root")
    victim = WorkerProcess(stack.settings, tmp_path, name="victim@localhost").start()
    steps = 12
    run = api.ok("POST", f"/api/sessions/{chat['id']}/probes", {"steps": steps, "step_seconds": 0.3})["run"]
    wait_for(lambda: len(finished_steps(api, run["id"])) >= 4, 30, message="four steps journaled")
    victim.kill()
    done_before_kill = {step["step_key"] for step in finished_steps(api, run["id"])}
    assert api.run_status(run["id"]) == "running"

    rescuer = WorkerProcess(stack.settings, tmp_path, name="rescuer@localhost").start()
    try:
        final = api.wait_for_run(run["id"], timeout=60)
    finally:
        rescuer.stop()
    assert final["claims"] == 2 and final["lease"]["epoch"] == 2
    journal = assert_finished_exactly_once(api, chat, final, steps)
    for step in journal:
        if step["step_key"] in done_before_kill:
            assert (step["attempt"], step["epoch"]) == (1, 1), step  # never repeated by the rescuer
    assert final["result"]["served_from_journal"] == len(done_before_kill)
    assert any(event["type"] == "run.resumed" for event in run_events(api, chat["id"], final["id"]))
    assert "victim" not in (final["lease"]["owner"] or "")


def test_killed_pool_child_is_recovered_by_the_same_worker(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Only the executing child dies (the main process lives on and re-queues the message)."""
    stack = make_stack()
    api, chat = stack.api, new_session(stack.api, tmp_path / "root")
    survivor = WorkerProcess(stack.settings, tmp_path, name="survivor@localhost").start()
    try:
        steps = 8
        run = api.ok("POST", f"/api/sessions/{chat['id']}/probes", {"steps": steps, "step_seconds": 0.3})["run"]
        wait_for(lambda: len(finished_steps(api, run["id"])) >= 2, 30, message="two steps journaled")
        owner = api.ok("GET", f"/api/runs/{run['id']}")["run"]["lease"]["owner"]
        child_pid = int(owner.split(":")[1])
        assert child_pid != survivor.process.pid
        os.kill(child_pid, signal.SIGKILL)
        final = api.wait_for_run(run["id"], timeout=60)
    finally:
        survivor.stop()
    assert final["claims"] == 2
    assert_finished_exactly_once(api, chat, final, steps)


def test_duplicate_deliveries_to_two_workers_execute_once(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Redis may deliver a task twice (visibility timeout, re-enqueue): the lease makes that harmless."""
    stack = make_stack()
    api, chat = stack.api, new_session(stack.api, tmp_path / "root")
    with stack.db.transaction() as session:
        run = runs.create_run(session, project_id=uuid.UUID(chat["project_id"]), session_id=uuid.UUID(chat["id"]),
                              kind="probe", input={"steps": 5, "step_seconds": 0.1}, created_by=None)
    queue = TaskQueue(stack.settings)
    for _ in range(10):
        assert queue.enqueue_run("probe", run.id)
    client = services.make_redis(stack.settings)
    queue_key = f"{stack.settings.redis_prefix}:celery:{jobs.TASK_ROUTES[jobs.PROBE_TASK]}"
    assert client.llen(queue_key) == 10  # every copy is really waiting in Redis
    first = WorkerProcess(stack.settings, tmp_path, name="first@localhost").start()
    second = WorkerProcess(stack.settings, tmp_path, name="second@localhost").start()
    try:
        final = api.wait_for_run(str(run.id), timeout=60)
        wait_for(lambda: client.llen(queue_key) == 0, 30, message="every duplicate consumed")
        wait_for(lambda: first.log().count("outcome") + second.log().count("outcome") >= 10, 30,
                 message="every duplicate executed")
    finally:
        first.stop()
        second.stop()
    assert final["claims"] == 1
    journal = assert_finished_exactly_once(api, {"id": chat["id"]}, final, 5)
    assert all(step["attempt"] == 1 for step in journal)


def test_a_lost_enqueue_is_recovered_by_the_sweep(api: Api, chat: dict, db, worker) -> None:  # type: ignore[no-untyped-def]
    """A run committed but never enqueued (the web process died in between) still runs."""
    with db.transaction() as session:
        run = runs.create_run(session, project_id=uuid.UUID(chat["project_id"]), session_id=uuid.UUID(chat["id"]),
                              kind="probe", input={"steps": 2, "step_seconds": 0}, created_by=None)
    final = api.wait_for_run(str(run.id), timeout=30)
    assert final["claims"] == 1


def test_database_connections_killed_mid_run_lose_nothing(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Chaos: terminate every connection to the database, repeatedly, while a run is working."""
    import time

    from sqlalchemy import text

    stack = make_stack()
    api, chat = stack.api, new_session(stack.api, tmp_path / "root")
    worker = WorkerProcess(stack.settings, tmp_path, name="chaos@localhost").start()
    steps = 20
    try:
        run = api.ok("POST", f"/api/sessions/{chat['id']}/probes", {"steps": steps, "step_seconds": 0.15})["run"]
        wait_for(lambda: len(finished_steps(api, run["id"])) >= 2, 30, message="run under way")
        terminated = 0
        for _ in range(8):
            with stack.db.transaction() as session:
                terminated += session.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
            time.sleep(0.25)
        assert terminated > 0
        final = api.wait_for_run(run["id"], timeout=90)
    finally:
        worker.stop()
    assert_finished_exactly_once(api, chat, final, steps)
