"""Maintenance: the recovery sweep, run by a loop inside every worker's main process.

Running the loop in each worker (rather than in a single beat process) means recovery keeps working
as long as any worker is alive. Sweeps are idempotent, so several workers sweeping is fine. The
same loop refreshes this worker's presence key for `/health`.
"""

from __future__ import annotations

import logging
import socket
import threading

from celery import Celery, bootsteps

from orchestrator import jobs, services
from orchestrator.recovery import sweep
from worker.runtime import WorkerRuntime
from worker.tasks.runs import send_with_retries

logger = logging.getLogger(__name__)


def register(app: Celery, runtime: WorkerRuntime) -> None:
    def enqueue(task_name: str, run_id: str) -> None:
        send_with_retries(app, task_name, run_id, attempts=3)  # the next sweep tries again

    @app.task(name=jobs.RECOVER_TASK, acks_late=True, ignore_result=True)
    def recover() -> int:
        """Sweep now (the loop does this on its own every recovery interval)."""
        return sweep(runtime.db, enqueue, requeue_after_seconds=runtime.settings.requeue_after_seconds,
                     lease_seconds=runtime.settings.lease_seconds)

    class RecoveryLoop(bootsteps.StartStopStep):
        requires = {"celery.worker.components:Pool"}

        def __init__(self, worker: object, **kwargs: object) -> None:
            super().__init__(worker, **kwargs)
            self._stop = threading.Event()
            self._thread: threading.Thread | None = None
            self._name = f"{getattr(worker, 'hostname', socket.gethostname())}"

        def start(self, worker: object) -> None:
            self._thread = threading.Thread(target=self._loop, name="boocode-recovery", daemon=True)
            self._thread.start()

        def stop(self, worker: object) -> None:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=5)
            try:
                runtime.redis.delete(services.worker_key(runtime.settings, self._name))
            except Exception:
                pass

        def _loop(self) -> None:
            while True:
                try:
                    services.announce_worker(runtime.redis, runtime.settings, self._name)
                    found = sweep(runtime.db, enqueue, requeue_after_seconds=runtime.settings.requeue_after_seconds,
                     lease_seconds=runtime.settings.lease_seconds)
                    if found:
                        logger.info("recovery sweep re-enqueued runs", extra={"count": found})
                except Exception:
                    logger.warning("recovery sweep failed; retrying", exc_info=True)
                if self._stop.wait(runtime.settings.recovery_interval_seconds):
                    return

    app.steps["worker"].add(RecoveryLoop)
