"""Orchestration overhead per agent turn, against a bare Celery task chain of the same length.

    .venv/bin/python -m bench.turn_overhead [--turns 30]

Ours:     one agent run of N turns (N-1 glob tool calls, then a final answer) through a real
          worker process and the fake model server answering instantly (zero model latency).
Baseline: a chain of N bare Celery tasks, each enqueueing the next (the same "continuation is a new
          task" shape), through the same Redis, measured in the same run.
Prints seconds, per-turn figures and the ratio; asserts nothing.
"""

from __future__ import annotations

import argparse
import time

from bench.common import REPO, scratch, start_worker, stop, wait_until
from orchestrator import services
from orchestrator.domain.enums import MessageRole
from orchestrator.store import projects, runs, sessions, users
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import RunStatusWatcher, committed_transactions
from web.queue import TaskQueue


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=30)
    turns = parser.parse_args().turns

    fake = FakeModelServer().start()
    # different arguments each turn: an identical repeated call is stopped by the agent loop
    fake.script(*[Reply(tool_calls=[("glob", {"pattern": f"*{index}"})], usage=openai_usage(100, 5))
                  for index in range(turns - 1)],
                Reply(text="done", usage=openai_usage(100, 1)))
    with scratch(BOOCODE_MODEL_BASE_URL=fake.base_url, BOOCODE_MODEL="bench-model",
                 BOOCODE_AGENT_MAX_STEPS=str(turns + 1)) as place:
        from bench.noop_app import app as noop

        baseline_worker = start_worker("bench.noop_app", place.noop_environment, f"chain-{place.tag}@bench")
        started = time.monotonic()
        noop.send_task("bench.chain", args=[turns])
        wait_until(lambda: int(place.redis.get(f"bench-{place.tag}:chain-done") or 0) >= turns)
        baseline_seconds = time.monotonic() - started
        stop(baseline_worker)

        db = services.make_database(place.settings)
        with db.transaction() as session:
            owner = users.create_user(session, "bench", is_admin=True)
            project = projects.create_project(session, "bench", str(REPO), owner)
            chat = sessions.create_session(session, project.id, "bench", owner.id)
            run = runs.create_run(session, project_id=project.id, session_id=chat.id, kind="agent", input={},
                                  created_by=owner.id)
            sessions.add_message(session, chat.id, MessageRole.USER, [{"type": "text", "text": "go"}], run_id=run.id)
        db.dispose()
        commits_before = committed_transactions(place.settings.database_url or "")
        worker = start_worker("worker.celery_app", place.settings.to_environment(), f"agent-{place.tag}@bench")
        started = time.monotonic()
        TaskQueue(place.settings).enqueue_run("agent", run.id)

        with RunStatusWatcher(place.settings.database_url or "", run.id) as watcher:  # adds no commits
            wait_until(lambda: watcher.status() in ("completed", "failed"))
            ours_seconds = time.monotonic() - started
            final = watcher.status()
        stop(worker)
        db.dispose()
        commits = committed_transactions(place.settings.database_url or "") - commits_before
    fake.stop()

    print(f"agent run ({final}) : {turns} turns in {ours_seconds:.2f}s = {ours_seconds / turns * 1000:.1f} ms/turn "
          f"(model answering instantly)")
    print(f"bare celery chain    : {turns} tasks in {baseline_seconds:.2f}s = "
          f"{baseline_seconds / turns * 1000:.1f} ms/task")
    print(f"overhead             : {(ours_seconds - baseline_seconds) / turns * 1000:.1f} ms/turn, "
          f"ratio {ours_seconds / baseline_seconds:.1f}x the bare chain")
    print(f"commits              : {commits} for the run = {commits / turns:.1f} per turn (pg_stat_database, "
          "including the worker's start and stop)")


if __name__ == "__main__":
    main()
