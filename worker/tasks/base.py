"""The one decorator every task goes through.

It fixes the things no task may get wrong: an explicit dotted name, late acknowledgement with
rejection on a lost worker (so a killed worker's task is redelivered), an id-only payload that is
validated before anything runs, a retry with back-off when Postgres is unreachable (an
infrastructure fault, not the run's), and a log line with the outcome and timing.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Callable

from celery import Celery, Task
from sqlalchemy.exc import InterfaceError, OperationalError

from worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)

TaskBody = Callable[[WorkerRuntime, uuid.UUID], str]


def durable_task(app: Celery, runtime: WorkerRuntime, name: str) -> Callable[[TaskBody], TaskBody]:
    def decorate(body: TaskBody) -> TaskBody:
        def run(task: Task, run_id: str) -> str:
            try:
                parsed = uuid.UUID(str(run_id))
            except ValueError:
                logger.error("dropping task with a malformed run id", extra={"task": name, "run_id": run_id})
                return "invalid"
            started = time.monotonic()
            try:
                outcome = body(runtime, parsed)
            except (OperationalError, InterfaceError) as error:
                delay = min(2 ** task.request.retries, 30)
                logger.warning("database unreachable; retrying the task", extra={"task": name, "run_id": str(parsed),
                                                                                 "countdown": delay})
                raise task.retry(exc=error, countdown=delay, max_retries=None) from error
            logger.info("task done", extra={"task": name, "run_id": str(parsed), "outcome": outcome,
                                            "seconds": round(time.monotonic() - started, 3)})
            return outcome

        run.__name__ = body.__name__
        run.__doc__ = body.__doc__
        app.task(name=name, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)(run)
        return body

    return decorate
