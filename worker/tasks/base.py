"""The one decorator every task goes through.

It fixes the things no task may get wrong: an explicit dotted name, late acknowledgement with
rejection on a lost worker (so a killed worker's task is redelivered), an id-only payload that is
validated before anything runs, and a log line with the outcome and timing.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Callable

from celery import Celery

from worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)

TaskBody = Callable[[WorkerRuntime, uuid.UUID], str]


def durable_task(app: Celery, runtime: WorkerRuntime, name: str) -> Callable[[TaskBody], TaskBody]:
    def decorate(body: TaskBody) -> TaskBody:
        def run(run_id: str) -> str:
            try:
                parsed = uuid.UUID(str(run_id))
            except ValueError:
                logger.error("dropping task with a malformed run id", extra={"task": name, "run_id": run_id})
                return "invalid"
            started = time.monotonic()
            outcome = body(runtime, parsed)
            logger.info("task done", extra={"task": name, "run_id": str(parsed), "outcome": outcome,
                                            "seconds": round(time.monotonic() - started, 3)})
            return outcome

        run.__name__ = body.__name__
        run.__doc__ = body.__doc__
        app.task(name=name, acks_late=True, reject_on_worker_lost=True, ignore_result=True)(run)
        return body

    return decorate
