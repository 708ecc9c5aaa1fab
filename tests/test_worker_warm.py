"""A pool process opens its connections when it is forked, not in its first task (worker/runtime.py warm)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import psutil

from orchestrator.store.models import Step
from tests.support import WorkerProcess, wait_for


def _remote_ports(pid: int) -> set[int]:
    return {connection.raddr.port for connection in psutil.Process(pid).net_connections(kind="tcp")
            if connection.raddr and connection.status == psutil.CONN_ESTABLISHED}


def test_each_pool_process_holds_its_database_and_redis_connections_before_any_task(  # type: ignore[no-untyped-def]
        make_stack, tmp_path: Path) -> None:
    stack = make_stack()  # its own database and queues: no task reaches this worker
    postgres = urlsplit(stack.settings.database_url).port or 5432
    redis = urlsplit(stack.settings.redis_url).port or 6379
    worker = WorkerProcess(stack.settings, tmp_path, name="warm@localhost", concurrency=2).start()
    try:
        main = psutil.Process(worker.process.pid)  # type: ignore[union-attr]
        wait_for(lambda: len(main.children()) == 2, 30, message="two pool processes")
        children = [child.pid for child in main.children()]
        wait_for(lambda: all({postgres, redis} <= _remote_ports(pid) for pid in children), 30,
                 message="each pool process connected to Postgres and Redis")
        with stack.db.transaction() as session:
            assert session.query(Step).count() == 0  # nothing ran: the connections came from the warm-up
    finally:
        worker.stop()
