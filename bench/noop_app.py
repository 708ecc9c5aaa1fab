"""The baseline for bench/pipeline.py: a bare Celery app whose task only counts itself in Redis."""

import os

import redis
from celery import Celery

from orchestrator.jobs import broker_url

REDIS_URL = os.environ["BENCH_REDIS_URL"]
PREFIX = os.environ["BENCH_PREFIX"]

app = Celery("bench-noop")
app.conf.update(broker_url=broker_url(REDIS_URL), task_acks_late=True, task_reject_on_worker_lost=True,
                worker_prefetch_multiplier=1, task_ignore_result=True,
                broker_transport_options={"global_keyprefix": f"{PREFIX}:noop:"})
_counter = redis.Redis.from_url(REDIS_URL)


@app.task(name="bench.noop")
def noop() -> None:
    _counter.incr(f"{PREFIX}:noop-done")


@app.task(name="bench.chain")
def chain(remaining: int) -> None:
    """One link of a chain: count itself, then enqueue the next (continuation as a new task)."""
    _counter.incr(f"{PREFIX}:chain-done")
    if remaining > 1:
        chain.delay(remaining - 1)
