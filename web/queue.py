"""Enqueueing by task name: the web side's only contact with Celery.

A client-only Celery object (no tasks, no worker code) publishes `(task name, run id)` messages with
the same routing as the worker. Always called after the transaction that created the run has
committed; if Redis is unreachable the run stays `queued` in Postgres and the workers' recovery
sweep enqueues it later, so the request still succeeds.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from celery import Celery

from orchestrator import jobs
from orchestrator.settings import Settings

logger = logging.getLogger(__name__)


class TaskQueue:
    def __init__(self, settings: Settings) -> None:
        self._celery = Celery("boocode-web")
        self._celery.conf.update(jobs.celery_config(settings))

    def enqueue_run(self, kind: str, run_id: object) -> bool:
        task_name = jobs.task_for_kind(kind)
        try:
            self._celery.send_task(task_name, args=[str(run_id)], retry=True,
                                   retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2})
            return True
        except Exception:
            logger.warning("enqueue failed; the recovery sweep will enqueue the run",
                           extra={"run_id": str(run_id), "task": task_name,
                                  "at": datetime.now(timezone.utc).isoformat()}, exc_info=True)
            return False

    def close(self) -> None:
        self._celery.close()
