"""Throughput of the durable run pipeline against bare Celery, measured in the same run.

    .venv/bin/python -m bench.pipeline [--runs 200] [--steps 200]

Baseline: N bare Celery no-op tasks (acks_late, prefetch 1) through the same Redis, 2 processes.
Ours:     N probe runs of one step each through `worker.celery_app` (claim the lease, journal the
          step, record the outcome, publish 4 events per run), 2 processes; and one run of K steps
          (journal writes per second inside one lease).
Prints figures and the ratios; it asserts nothing. Uses the local PostgreSQL/Redis (override with
BOOCODE_TEST_POSTGRES_URL / BOOCODE_TEST_REDIS_URL) and a throwaway database.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import redis
from sqlalchemy import func, select

from orchestrator import migrate, services
from orchestrator.settings import load_settings
from orchestrator.store import projects, runs, sessions, users
from orchestrator.store.models import Run
from web.queue import TaskQueue

REPO = Path(__file__).resolve().parent.parent


def start_worker(app: str, environment: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "celery", "--app", app, "worker", "--concurrency", "2",
                             "--loglevel", "WARNING", "--hostname", name, "--without-mingle", "--without-gossip"],
                            cwd=REPO, env={**os.environ, **environment}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(30)


def wait_until(condition, timeout: float = 600) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("benchmark timed out")
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=200)
    options = parser.parse_args()

    admin_url = os.environ.get("BOOCODE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("BOOCODE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    tag = uuid.uuid4().hex[:8]
    database = f"boocode_bench_{tag}"
    with psycopg.connect(admin_url.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    database_url = admin_url.rsplit("/", 1)[0] + f"/{database}"
    settings = load_settings({"DATABASE_URL": database_url, "REDIS_URL": redis_url,
                              "BOOCODE_REDIS_PREFIX": f"bench-{tag}"})
    migrate.upgrade(settings.database_url or "")
    counter = redis.Redis.from_url(redis_url)

    # Baseline: bare Celery. The app module reads its broker from the environment it shares with its worker.
    environment = {"BENCH_REDIS_URL": redis_url, "BENCH_PREFIX": f"bench-{tag}"}
    os.environ.update(environment)
    from bench.noop_app import app as noop

    baseline_worker = start_worker("bench.noop_app", environment, f"noop-{tag}@bench")
    time.sleep(3)
    started = time.monotonic()
    for _ in range(options.runs):
        noop.send_task("bench.noop")
    wait_until(lambda: int(counter.get(f"bench-{tag}:noop-done") or 0) >= options.runs)
    baseline_seconds = time.monotonic() - started
    stop(baseline_worker)

    # Ours: probe runs through the real worker.
    db = services.make_database(settings)
    with db.transaction() as session:
        owner = users.create_user(session, "bench", is_admin=True)
        project = projects.create_project(session, "bench", str(REPO), owner)
        chats = [sessions.create_session(session, project.id, f"bench {index}", owner.id) for index in range(10)]
    with db.transaction() as session:
        created = [runs.create_run(session, project_id=project.id, session_id=chats[index % 10].id, kind="probe",
                                   input={"steps": 1, "step_seconds": 0}, created_by=owner.id)
                   for index in range(options.runs)]
        long_run = runs.create_run(session, project_id=project.id, session_id=chats[0].id, kind="probe",
                                   input={"steps": options.steps, "step_seconds": 0}, created_by=owner.id)
    worker = start_worker("worker.celery_app", settings.to_environment(), f"ours-{tag}@bench")
    queue = TaskQueue(settings)
    time.sleep(3)

    def completed(run_ids: list[uuid.UUID]) -> int:
        with db.transaction() as session:
            return session.scalar(select(func.count()).select_from(Run)
                                  .where(Run.id.in_(run_ids), Run.status == "completed"))

    started = time.monotonic()
    for run in created:
        queue.enqueue_run("probe", run.id)
    wait_until(lambda: completed([run.id for run in created]) == options.runs)
    ours_seconds = time.monotonic() - started

    started = time.monotonic()
    queue.enqueue_run("probe", long_run.id)
    wait_until(lambda: completed([long_run.id]) == 1)
    steps_seconds = time.monotonic() - started
    stop(worker)
    db.dispose()

    with psycopg.connect(admin_url.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    keys = list(counter.scan_iter(match=f"bench-{tag}*"))
    if keys:
        counter.delete(*keys)

    print(f"bare celery no-op tasks : {options.runs / baseline_seconds:8.1f} tasks/s  ({baseline_seconds:.2f}s)")
    print(f"durable probe runs      : {options.runs / ours_seconds:8.1f} runs/s   ({ours_seconds:.2f}s)")
    print(f"ratio (ours / baseline) : {baseline_seconds / ours_seconds:8.2f}x throughput, "
          f"{(ours_seconds - baseline_seconds) / options.runs * 1000:.1f} ms extra per run")
    print(f"journal steps in one run: {options.steps / steps_seconds:8.1f} steps/s  ({steps_seconds:.2f}s for "
          f"{options.steps} steps)")


if __name__ == "__main__":
    main()
