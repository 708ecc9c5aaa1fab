"""What the benchmarks share: a throwaway database and Redis prefix, worker processes, waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import psycopg
import redis

from orchestrator import migrate
from orchestrator.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Scratch:
    settings: Settings
    redis: redis.Redis
    tag: str
    noop_environment: dict[str, str]


@contextmanager
def scratch(**environment: str) -> Iterator[Scratch]:
    """A migrated database and a Redis prefix of their own, removed afterwards. Uses the local servers
    (override with BOOCODE_TEST_POSTGRES_URL / BOOCODE_TEST_REDIS_URL); `environment` adds settings."""
    admin_url = os.environ.get("BOOCODE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("BOOCODE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    tag = uuid.uuid4().hex[:8]
    database = f"boocode_bench_{tag}"
    with psycopg.connect(admin_url.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    client = redis.Redis.from_url(redis_url)
    try:
        settings = load_settings({"DATABASE_URL": admin_url.rsplit("/", 1)[0] + f"/{database}", "REDIS_URL": redis_url,
                                  "BOOCODE_REDIS_PREFIX": f"bench-{tag}", **environment})
        migrate.upgrade(settings.database_url or "")
        # bench.noop_app reads its broker from the environment it shares with its worker
        noop_environment = {"BENCH_REDIS_URL": redis_url, "BENCH_PREFIX": f"bench-{tag}"}
        os.environ.update(noop_environment)
        yield Scratch(settings, client, tag, noop_environment)
    finally:
        with psycopg.connect(admin_url.replace("+psycopg", ""), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        keys = list(client.scan_iter(match=f"bench-{tag}*"))
        if keys:
            client.delete(*keys)


def start_worker(app: str, environment: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    """A Celery worker of 2 pool processes (BENCH_WORKER_PROCESSES to change it)."""
    processes = os.environ.get("BENCH_WORKER_PROCESSES", "2")
    process = subprocess.Popen([sys.executable, "-m", "celery", "--app", app, "worker", "--concurrency", processes,
                                "--loglevel", os.environ.get("BENCH_LOG_LEVEL", "WARNING"), "--hostname", name,
                                "--without-mingle", "--without-gossip"],
                               cwd=REPO, env={**os.environ, **environment}, start_new_session=True,
                               stdout=open(os.environ.get("BENCH_WORKER_LOG", os.devnull), "ab"),
                               stderr=subprocess.STDOUT)
    time.sleep(3)  # let it connect before the clock starts
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(30)


def wait_until(condition: Callable[[], bool], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("benchmark timed out")
        time.sleep(0.01)
