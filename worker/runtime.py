"""Per-process worker state: settings, the database, Redis and this worker's identity.

Prefork children inherit the parent's objects over fork; `Database` and the Redis client are
re-created lazily per process so no connection is shared between processes.
"""

from __future__ import annotations

import os
import socket
import uuid

import redis

from orchestrator import services
from orchestrator.settings import Settings
from orchestrator.store.database import Database


class WorkerRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid: int | None = None
        self._db: Database | None = None
        self._redis: redis.Redis | None = None
        self._instance = uuid.uuid4().hex[:8]

    def _ensure_process(self) -> None:
        if self._pid != os.getpid():
            self._redis = services.make_redis(self.settings)
            self._db = services.make_database(self.settings, self._redis)
            self._pid = os.getpid()

    @property
    def db(self) -> Database:
        self._ensure_process()
        assert self._db is not None
        return self._db

    @property
    def redis(self) -> redis.Redis:
        self._ensure_process()
        assert self._redis is not None
        return self._redis

    @property
    def owner(self) -> str:
        """Lease owner name: host, process and a per-start nonce (pids are reused)."""
        return f"{socket.gethostname()}:{os.getpid()}:{self._instance}"
