"""Throughput of the durable run pipeline against bare Celery, measured in the same run.

    .venv/bin/python -m bench.pipeline [--runs 200] [--steps 200]

Baseline: N bare Celery no-op tasks (acks_late, prefetch 1) through the same Redis, 2 processes.
Ours:     N probe runs of one step each through `worker.celery_app` (claim the lease, journal the
          step, record the outcome, publish 4 events per run), 2 processes; and one run of K steps
          (journal writes per second inside one lease).
Prints figures and the ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
import uuid

from sqlalchemy import func, select

from bench.common import scratch, start_worker, stop, wait_until
from orchestrator import services
from orchestrator.store import projects, runs, sessions, users
from orchestrator.store.models import Run
from web.queue import TaskQueue


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=200)
    options = parser.parse_args()

    with scratch() as place:
        from bench.noop_app import app as noop

        baseline_worker = start_worker("bench.noop_app", place.noop_environment, f"noop-{place.tag}@bench")
        started = time.monotonic()
        for _ in range(options.runs):
            noop.send_task("bench.noop")
        wait_until(lambda: int(place.redis.get(f"bench-{place.tag}:noop-done") or 0) >= options.runs)
        baseline_seconds = time.monotonic() - started
        stop(baseline_worker)

        db = services.make_database(place.settings)
        with db.transaction() as session:
            owner = users.create_user(session, "bench", is_admin=True)
            project = projects.create_project(session, "bench", "/tmp", owner)
            chats = [sessions.create_session(session, project.id, f"bench {index}", owner.id) for index in range(10)]
        with db.transaction() as session:
            created = [runs.create_run(session, project_id=project.id, session_id=chats[index % 10].id, kind="probe",
                                       input={"steps": 1, "step_seconds": 0}, created_by=owner.id)
                       for index in range(options.runs)]
            long_run = runs.create_run(session, project_id=project.id, session_id=chats[0].id, kind="probe",
                                       input={"steps": options.steps, "step_seconds": 0}, created_by=owner.id)
        worker = start_worker("worker.celery_app", place.settings.to_environment(), f"ours-{place.tag}@bench")
        queue = TaskQueue(place.settings)

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

    print(f"bare celery no-op tasks : {options.runs / baseline_seconds:8.1f} tasks/s  ({baseline_seconds:.2f}s)")
    print(f"durable probe runs      : {options.runs / ours_seconds:8.1f} runs/s   ({ours_seconds:.2f}s)")
    print(f"ratio (ours / baseline) : {baseline_seconds / ours_seconds:8.2f}x throughput, "
          f"{(ours_seconds - baseline_seconds) / options.runs * 1000:.1f} ms extra per run")
    print(f"journal steps in one run: {options.steps / steps_seconds:8.1f} steps/s  ({steps_seconds:.2f}s for "
          f"{options.steps} steps)")


if __name__ == "__main__":
    main()
