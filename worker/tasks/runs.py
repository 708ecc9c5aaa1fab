"""Tasks that execute runs: one task per run kind (orchestrator/runkinds.py), each claiming the run's
lease and handing it to the kind's handler."""

from __future__ import annotations

import logging
import time
import uuid

from celery import Celery

from orchestrator import jobs
from orchestrator.lifecycle import TimeSlice, execute_run
from orchestrator.runkinds import RUN_KINDS, load_finish_hooks, load_handlers
from worker.runtime import WorkerRuntime
from worker.tasks.base import durable_task

logger = logging.getLogger(__name__)

ENQUEUE_ATTEMPTS = 8  # about 25 s of back-off: a Redis restart is ridden out; past that the sweep takes over


def send_with_retries(app: Celery, task_name: str, run_id: str, attempts: int = ENQUEUE_ATTEMPTS) -> bool:
    """Enqueue after a commit, riding out a Redis blip with back-off (0.2 s, 0.4 s … 6.4 s). What is
    committed stays `queued`, so if Redis stays away the recovery sweep enqueues it later; never raise
    here, since the run's state is already safe in Postgres."""
    delay = 0.2
    for attempt in range(1, attempts + 1):
        try:
            app.send_task(task_name, args=[run_id])
            return True
        except Exception:  # kombu/redis raise many types for a lost connection
            if attempt == attempts:
                logger.warning("could not enqueue; the recovery sweep will",
                               extra={"run_id": run_id, "task": task_name}, exc_info=True)
                return False
            time.sleep(delay)
            delay = min(delay * 2, 6.4)
    return False


def others_waiting(runtime: WorkerRuntime) -> bool:
    """Whether a task waits in any queue this worker consumes (kombu keeps each queue as a Redis list
    under the prefix). Prefetching is 1 per process with late acks, so a waiting task is in Redis, not
    held by this worker. Redis unreachable counts as busy: hand the lease back as before ADR 0006."""
    keys = [f"{runtime.settings.redis_prefix}:celery:{queue}" for queue in jobs.QUEUES]
    try:
        pipeline = runtime.redis.pipeline(transaction=False)
        for key in keys:
            pipeline.llen(key)
        return any(pipeline.execute())
    except Exception:
        return True


def register(app: Celery, runtime: WorkerRuntime) -> None:
    handlers = load_handlers(runtime.settings)
    finish_hooks = load_finish_hooks(runtime.settings)
    time_slice = TimeSlice(runtime.settings.turn_slice_seconds, lambda: others_waiting(runtime))

    def enqueue(task_name: str, run_id: str) -> None:
        send_with_retries(app, task_name, run_id)

    def execute(runtime: WorkerRuntime, run_id: uuid.UUID) -> str:
        if runtime.settings.claim_delay_seconds:
            time.sleep(runtime.settings.claim_delay_seconds)  # a declared fault-injection seam; 0 by default
        return execute_run(runtime.db, run_id, owner=runtime.owner, lease_seconds=runtime.settings.lease_seconds,
                           handlers=handlers, enqueue=enqueue, on_finish=finish_hooks,
                           max_crashes=runtime.settings.max_worker_crashes, time_slice=time_slice)

    for task_name in sorted({spec.task for spec in RUN_KINDS.values()}):
        durable_task(app, runtime, task_name)(execute)
