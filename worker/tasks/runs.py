"""Tasks that execute runs. Each claims the run's lease and hands it to the core's handler."""

from __future__ import annotations

import uuid

from celery import Celery

from orchestrator import jobs
from orchestrator.lifecycle import Handler, execute_run
from orchestrator.probe import run_probe
from worker.runtime import WorkerRuntime
from worker.tasks.base import durable_task

# Run kind -> handler. The agent runtime registers "agent" here when it lands.
HANDLERS: dict[str, Handler] = {
    "probe": run_probe,
}


def register(app: Celery, runtime: WorkerRuntime) -> None:
    def enqueue(task_name: str, run_id: str) -> None:
        app.send_task(task_name, args=[run_id])

    def execute(runtime: WorkerRuntime, run_id: uuid.UUID) -> str:
        return execute_run(runtime.db, run_id, owner=runtime.owner, lease_seconds=runtime.settings.lease_seconds,
                           handlers=HANDLERS, enqueue=enqueue)

    durable_task(app, runtime, jobs.TURN_TASK)(execute)
    durable_task(app, runtime, jobs.PROBE_TASK)(execute)
