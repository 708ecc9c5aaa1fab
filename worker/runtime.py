"""Per-process worker state: settings, the database, Redis and this worker's identity.

Prefork children inherit the parent's objects over fork; `Database` and the Redis client are
re-created lazily per process so no connection is shared between processes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
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


def preload() -> None:
    """Import, once in the parent before the pool forks, what each pool process's first task would
    otherwise import for itself (the database driver; the openai client's HTTP transport and chat
    resources: about 170 ms a process). The children share these pages copy-on-write."""
    import openai
    import psycopg  # noqa: F401 - imported for its side effect: loaded before the fork

    with openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="preload") as client:
        client.chat.completions  # noqa: B018 - resolves (imports) the chat resources; nothing is sent


def warm(runtime: WorkerRuntime) -> None:
    """In a pool process just forked: open its first database and Redis connections and build the
    server model's client (its TLS context loads the CA store, ~25 ms), so its first turn pays none of
    it. In a thread: Celery gives a new process 4 s to report for work, and a connection to a service
    that does not answer may take longer; such a failure is met again, and reported, by the first task
    that needs the service. The objects are made here, before the thread, so no two get made."""
    database, client = runtime.db, runtime.redis
    database.engine  # noqa: B018 - built without I/O; connecting is the thread's

    def connect() -> None:
        from orchestrator.agent.loop import AgentConfig, model_client

        try:
            with database.engine.connect() as connection:  # back to the pool on close: a rollback, no commit
                connection.exec_driver_sql("SELECT 1")
            client.ping()
            config = AgentConfig.from_settings(runtime.settings)
            if config.provider is not None:
                model_client(config, config.provider)
        except Exception:  # noqa: BLE001 - see above: the task reports it
            logging.getLogger(__name__).debug("warming the pool process failed", exc_info=True)

    threading.Thread(target=connect, name="boocode-warm", daemon=True).start()
