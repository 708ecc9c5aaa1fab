"""Tasks that execute runs. Each claims the run's lease and hands it to the core's handler."""

from __future__ import annotations

import logging
import time
import uuid

from celery import Celery

from orchestrator import jobs
from orchestrator.agent.loop import AgentConfig, make_agent_handler
from orchestrator.lifecycle import FinishHook, Handler, execute_run
from orchestrator.probe import run_probe
from orchestrator.settings import Settings
from orchestrator.store import subagents
from orchestrator.workflow.engine import WorkflowConfig, make_workflow_handler
from worker.runtime import WorkerRuntime
from worker.tasks.base import durable_task

logger = logging.getLogger(__name__)


def make_handlers(settings: Settings) -> dict[str, Handler]:
    """Run kind -> handler."""
    agent = make_agent_handler(AgentConfig.from_settings(settings))
    return {
        "probe": run_probe,
        "agent": agent,
        "subagent": agent,  # the same loop; it first waits for a slot
        "workflow": make_workflow_handler(WorkflowConfig.from_settings(settings)),
    }


def make_finish_hooks(settings: Settings) -> dict[str, FinishHook]:
    """Run kind -> what its end sets going (see orchestrator.store.subagents)."""
    limits = subagents.Limits.from_settings(settings)
    return {
        "agent": subagents.after_agent_run,
        "subagent": lambda session, lease: subagents.after_subagent(session, lease, limits),
    }


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
                logger.warning("could not enqueue; the recovery sweep will", extra={"run_id": run_id, "task": task_name},
                               exc_info=True)
                return False
            time.sleep(delay)
            delay = min(delay * 2, 6.4)
    return False


def register(app: Celery, runtime: WorkerRuntime) -> None:
    handlers = make_handlers(runtime.settings)
    finish_hooks = make_finish_hooks(runtime.settings)

    def enqueue(task_name: str, run_id: str) -> None:
        send_with_retries(app, task_name, run_id)

    def execute(runtime: WorkerRuntime, run_id: uuid.UUID) -> str:
        if runtime.settings.claim_delay_seconds:
            time.sleep(runtime.settings.claim_delay_seconds)  # a declared fault-injection seam; 0 by default
        return execute_run(runtime.db, run_id, owner=runtime.owner, lease_seconds=runtime.settings.lease_seconds,
                           handlers=handlers, enqueue=enqueue, on_finish=finish_hooks,
                           max_crashes=runtime.settings.max_worker_crashes)

    durable_task(app, runtime, jobs.TURN_TASK)(execute)
    durable_task(app, runtime, jobs.PROBE_TASK)(execute)
    durable_task(app, runtime, jobs.WORKFLOW_TASK)(execute)
    durable_task(app, runtime, jobs.SUBAGENT_TASK)(execute)
