"""Orchestration overhead per agent turn, against a bare Celery task chain of the same length.

    .venv/bin/python -m bench.turn_overhead [--turns 30]

Ours:     one agent run of N turns (N-1 tool calls to list_dir, then a final answer) through a real
          worker process and the fake model server answering instantly (zero model latency).
Baseline: a chain of N bare Celery tasks, each enqueueing the next (the same "continuation is a new
          task" shape), through the same Redis, measured in the same run.
Prints seconds, per-turn figures and the ratio; asserts nothing. Uses the local PostgreSQL/Redis
(override with BOOCODE_TEST_POSTGRES_URL / BOOCODE_TEST_REDIS_URL) and a throwaway database.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from pathlib import Path

import psycopg
import redis

from bench.pipeline import start_worker, stop, wait_until
from orchestrator import migrate, services
from orchestrator.settings import load_settings
from orchestrator.store import projects, runs, sessions, users
from orchestrator.store.models import Run
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from web.queue import TaskQueue

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=30)
    turns = parser.parse_args().turns

    admin_url = os.environ.get("BOOCODE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("BOOCODE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    tag = uuid.uuid4().hex[:8]
    database = f"boocode_bench_{tag}"
    with psycopg.connect(admin_url.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    fake = FakeModelServer().start()
    fake.script(*[Reply(tool_calls=[("list_dir", {})], usage=openai_usage(100, 5)) for _ in range(turns - 1)],
                Reply(text="done", usage=openai_usage(100, 1)))
    settings = load_settings({"DATABASE_URL": admin_url.rsplit("/", 1)[0] + f"/{database}", "REDIS_URL": redis_url,
                              "BOOCODE_REDIS_PREFIX": f"bench-{tag}", "BOOCODE_MODEL_BASE_URL": fake.base_url,
                              "BOOCODE_MODEL": "bench-model", "BOOCODE_AGENT_MAX_STEPS": str(turns + 1)})
    migrate.upgrade(settings.database_url or "")
    counter = redis.Redis.from_url(redis_url)

    # Baseline: a chain of bare tasks, each enqueueing the next.
    environment = {"BENCH_REDIS_URL": redis_url, "BENCH_PREFIX": f"bench-{tag}"}
    os.environ.update(environment)
    from bench.noop_app import app as noop

    baseline_worker = start_worker("bench.noop_app", environment, f"chain-{tag}@bench")
    time.sleep(3)
    started = time.monotonic()
    noop.send_task("bench.chain", args=[turns])
    wait_until(lambda: int(counter.get(f"bench-{tag}:chain-done") or 0) >= turns)
    baseline_seconds = time.monotonic() - started
    stop(baseline_worker)

    db = services.make_database(settings)
    with db.transaction() as session:
        owner = users.create_user(session, "bench", is_admin=True)
        project = projects.create_project(session, "bench", str(REPO), owner)
        chat = sessions.create_session(session, project.id, "bench", owner.id)
        run = runs.create_run(session, project_id=project.id, session_id=chat.id, kind="agent", input={},
                              created_by=owner.id)
        sessions.add_message(session, chat.id, sessions.MessageRole.USER, [{"type": "text", "text": "go"}],
                             run_id=run.id)
    worker = start_worker("worker.celery_app", settings.to_environment(), f"agent-{tag}@bench")
    time.sleep(3)
    started = time.monotonic()
    TaskQueue(settings).enqueue_run("agent", run.id)

    def finished() -> bool:
        with db.transaction() as session:
            return session.get(Run, run.id).status in ("completed", "failed")

    wait_until(finished)
    ours_seconds = time.monotonic() - started
    with db.transaction() as session:
        status = session.get(Run, run.id).status
    stop(worker)
    db.dispose()
    fake.stop()
    with psycopg.connect(admin_url.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    keys = list(counter.scan_iter(match=f"bench-{tag}*"))
    if keys:
        counter.delete(*keys)

    print(f"agent run ({status}) : {turns} turns in {ours_seconds:.2f}s = {ours_seconds / turns * 1000:.1f} ms/turn "
          f"(model answering instantly)")
    print(f"bare celery chain    : {turns} tasks in {baseline_seconds:.2f}s = {baseline_seconds / turns * 1000:.1f} ms/task")
    print(f"overhead             : {(ours_seconds - baseline_seconds) / turns * 1000:.1f} ms/turn, "
          f"ratio {ours_seconds / baseline_seconds:.1f}x the bare chain")


if __name__ == "__main__":
    main()
