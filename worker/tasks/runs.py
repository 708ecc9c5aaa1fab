"""Tasks that execute runs. Each claims the run's lease and hands it to the core's handler."""

from __future__ import annotations

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


def register(app: Celery, runtime: WorkerRuntime) -> None:
    handlers = make_handlers(runtime.settings)
    finish_hooks = make_finish_hooks(runtime.settings)

    def enqueue(task_name: str, run_id: str) -> None:
        app.send_task(task_name, args=[run_id])

    def execute(runtime: WorkerRuntime, run_id: uuid.UUID) -> str:
        return execute_run(runtime.db, run_id, owner=runtime.owner, lease_seconds=runtime.settings.lease_seconds,
                           handlers=handlers, enqueue=enqueue, on_finish=finish_hooks)

    durable_task(app, runtime, jobs.TURN_TASK)(execute)
    durable_task(app, runtime, jobs.PROBE_TASK)(execute)
    durable_task(app, runtime, jobs.WORKFLOW_TASK)(execute)
    durable_task(app, runtime, jobs.SUBAGENT_TASK)(execute)
