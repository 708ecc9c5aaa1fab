"""The Celery application factory and the module-level app the `celery` command loads.

    celery -A worker.celery_app worker      # consumes every queue in orchestrator.jobs.QUEUES
    celery -A worker.celery_app beat        # sends the flow-schedule beat (worker/tasks/schedules.py)

No result backend: run status lives in Postgres. See docs/worker.md for the delivery settings.
"""

from __future__ import annotations

import sys

from celery import Celery
from celery.signals import worker_init, worker_process_init
from kombu import Exchange, Queue

from orchestrator import jobs
from orchestrator.errors import ConfigurationError
from orchestrator.logs import configure_logging
from orchestrator.sandbox import Sandbox
from orchestrator.settings import Settings, load_settings, scrub_environment
from worker.broker import worker_broker_url
from worker.runtime import WorkerRuntime, preload, warm
from worker.tasks import maintenance, runs, schedules


def make_celery(settings: Settings) -> Celery:
    settings.require_services()
    app = Celery("boocode")
    app.conf.update(jobs.celery_config(settings))
    # Each queue gets its own direct exchange and key: with one shared default exchange every queue
    # would be bound to the same key and a message would be copied into all of them.
    app.conf.task_queues = [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in jobs.QUEUES]
    app.conf.worker_concurrency = settings.worker_concurrency
    app.conf.broker_url = worker_broker_url(app.conf.broker_url)  # kombu's Redis transport, one fault worked around
    runtime = WorkerRuntime(settings)
    app.boocode_runtime = runtime
    runs.register(app, runtime)
    maintenance.register(app, runtime)
    schedules.register(app, runtime)

    @worker_init.connect(weak=False)
    def check_sandbox_and_preload(**_: object) -> None:
        try:
            Sandbox.from_settings(settings).check()
        except ConfigurationError as error:
            print(error, file=sys.stderr)  # before consuming anything: say what to install or set
            raise SystemExit(2) from None
        preload()  # before the pool forks (worker/runtime.py)

    @worker_process_init.connect(weak=False)
    def warm_process(**_: object) -> None:
        warm(runtime)

    return app


def _load_app() -> Celery:
    try:
        settings = load_settings(services_required=True)
        scrub_environment()
    except ConfigurationError as error:
        # Started by `celery --app worker.celery_app`: say what to set, without a traceback.
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings)
    return make_celery(settings)


app = _load_app()
