"""The flow-schedule beat: `celery beat` sends SCHEDULE_TASK every BOOCODE_BEAT_INTERVAL_SECONDS and a
worker fires what is due (orchestrator/flows/schedules.py). The beat process holds no firing state:
the cursor and the firings are rows in Postgres, so a restarted beat, or two beats running by
mistake, neither lose nor repeat a firing; a stale beat message expires instead of piling up while
no worker is up.

    celery --app worker.celery_app beat --schedule <data dir>/celerybeat-schedule
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from orchestrator import jobs
from orchestrator.flows.schedules import beat
from orchestrator.store import subagents
from worker.runtime import WorkerRuntime
from worker.tasks.runs import send_with_retries

logger = logging.getLogger(__name__)


def beat_schedule(interval_seconds: float) -> dict[str, Any]:
    """Celery beat's one entry; a message older than two intervals is dropped (the next one comes)."""
    return {"flow-schedules": {"task": jobs.SCHEDULE_TASK, "schedule": interval_seconds,
                               "options": {"expires": max(2 * interval_seconds, 5.0)}}}


def register(app: Celery, runtime: WorkerRuntime) -> None:
    app.conf.beat_schedule = beat_schedule(runtime.settings.beat_interval_seconds)

    def enqueue(task_name: str, run_id: str) -> None:
        send_with_retries(app, task_name, run_id, attempts=3)  # the recovery sweep re-sends what is lost

    @app.task(name=jobs.SCHEDULE_TASK, acks_late=True, ignore_result=True)
    def fire_due_schedules() -> int:
        report = beat(runtime.db, enqueue, runtime.settings.data_dir / "flows",
                      subagents.Limits.from_settings(runtime.settings))
        if report.started or report.refused or report.missed:
            logger.info("flow schedules fired", extra={"started": len(report.started), "skipped": report.skipped,
                                                      "buffered": report.buffered, "missed": report.missed,
                                                      "refused": len(report.refused)})
        return len(report.started)
