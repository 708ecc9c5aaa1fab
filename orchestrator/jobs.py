"""Task names, queues and routing, shared by the web front end (which enqueues) and the worker.

Tasks carry one argument: a run id. Everything else is re-read from Postgres inside the task.
This module holds plain data so that neither side imports the other.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

from orchestrator.runkinds import RUN_KINDS, task_for_kind
from orchestrator.settings import Settings

__all__ = ["QUEUES", "TASK_ROUTES", "task_for_kind", "celery_config", "broker_url"]

QUEUES = ("turns", "tools", "workflows", "subagents", "flows", "maintenance")

# The run kinds' tasks come from their table (orchestrator/runkinds.py); the sweep's is the one other.
TURN_TASK = RUN_KINDS["agent"].task
PROBE_TASK = RUN_KINDS["probe"].task
WORKFLOW_TASK = RUN_KINDS["workflow"].task
SUBAGENT_TASK = RUN_KINDS["subagent"].task
RECOVER_TASK = "maintenance.recover"
SCHEDULE_TASK = "maintenance.flow_schedules"  # sent by the beat process (celery beat) every beat interval

TASK_ROUTES: dict[str, str] = {**{spec.task: spec.queue for spec in RUN_KINDS.values()}, RECOVER_TASK: "maintenance",
                               SCHEDULE_TASK: "maintenance"}
assert set(TASK_ROUTES.values()) <= set(QUEUES), "every run kind's queue must be one of QUEUES"


def broker_url(redis_url: str) -> str:
    """Kombu spells a unix-socket Redis `redis+socket://`; redis-py spells it `unix://`."""
    if redis_url.startswith("unix://"):
        parsed = urlparse(redis_url)
        database = parse_qs(parsed.query).get("db", ["0"])[0]
        return f"redis+socket://{parsed.path}?virtual_host={database}"
    return redis_url


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings both sides agree on. See docs/worker.md for why each is set."""
    assert settings.redis_url, "call settings.require_services() first"
    return {
        "broker_url": broker_url(settings.redis_url),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_seconds,
            "global_keyprefix": f"{settings.redis_prefix}:celery:",
        },
        "task_routes": {name: {"queue": queue, "exchange": queue, "routing_key": queue}
                        for name, queue in TASK_ROUTES.items()},
        "task_default_queue": "maintenance",
        "task_default_exchange": "maintenance",
        "task_default_routing_key": "maintenance",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
    }
