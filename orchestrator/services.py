"""Clients for the shared services, built from settings, plus worker presence.

Workers announce themselves with a short-lived Redis key, refreshed by their maintenance loop;
`/health` counts those keys instead of broadcasting to every worker.
"""

from __future__ import annotations

import time

import redis

from orchestrator.settings import Settings
from orchestrator.store.database import Database
from orchestrator.tracing.publisher import RedisPublisher

WORKER_PRESENCE_SECONDS = 15


def make_redis(settings: Settings) -> redis.Redis:
    assert settings.redis_url
    return redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5,
                                health_check_interval=30)


def make_database(settings: Settings, redis_client: redis.Redis | None = None) -> Database:
    assert settings.database_url
    publisher = RedisPublisher(redis_client or make_redis(settings), settings.redis_prefix)
    return Database(settings.database_url, publisher)


def worker_key(settings: Settings, worker_name: str) -> str:
    return f"{settings.redis_prefix}:workers:{worker_name}"


def announce_worker(client: redis.Redis, settings: Settings, worker_name: str) -> None:
    client.set(worker_key(settings, worker_name), str(time.time()), ex=WORKER_PRESENCE_SECONDS)


def live_workers(client: redis.Redis, settings: Settings) -> list[str]:
    prefix = worker_key(settings, "")
    return sorted(key.decode()[len(prefix):] for key in client.scan_iter(match=prefix + "*", count=500))
