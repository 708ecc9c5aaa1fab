"""Run kinds live in one table (orchestrator/runkinds.py): a new kind is one entry plus its handler."""

from __future__ import annotations

import uuid

import pytest

from orchestrator import jobs
from orchestrator.domain.enums import RunKind, RunStatus
from orchestrator.lifecycle import Finish, Handler, RunContext, RunOutcome, execute_run
from orchestrator.runkinds import RUN_KINDS, RunKindSpec, UnknownRunKindError, load_handlers, task_for_kind
from orchestrator.settings import Settings
from orchestrator.store import projects, runs, sessions, users
from orchestrator.store.database import Database


def echo_handler(settings: Settings) -> Handler:
    """A throwaway kind's whole handler: journal one step, finish with its output."""
    def handle(context: RunContext) -> RunOutcome:
        echoed = context.step("echo", lambda: {"echo": context.run.input["say"]})
        return Finish(result=echoed)

    return handle


def test_every_kind_has_a_task_a_queue_and_a_handler(settings: Settings) -> None:
    assert set(RUN_KINDS) == {kind.value for kind in RunKind}
    handlers = load_handlers(settings)
    assert set(handlers) == set(RUN_KINDS) and all(callable(handler) for handler in handlers.values())
    for spec in RUN_KINDS.values():
        assert jobs.TASK_ROUTES[spec.task] == spec.queue and spec.queue in jobs.QUEUES


def test_an_unknown_kind_is_an_error_not_a_fallback() -> None:
    with pytest.raises(UnknownRunKindError, match="no run kind 'flowz'"):
        task_for_kind("flowz")


def test_a_new_kind_is_one_entry_and_one_handler(settings: Settings, db: Database) -> None:
    kinds = {**RUN_KINDS, "echo": RunKindSpec("echo", "echo.run", "maintenance", "tests.test_run_kinds:echo_handler")}
    with db.transaction() as session:
        owner = users.create_user(session, f"kinds-{uuid.uuid4().hex[:6]}")
        project = projects.create_project(session, "kinds", "/tmp", owner)
        chat = sessions.create_session(session, project.id, "kinds", owner.id)
        run = runs.create_run(session, project_id=project.id, session_id=chat.id, kind="echo", input={"say": "hi"},
                              created_by=owner.id)
    assert task_for_kind("echo", kinds) == "echo.run"
    sent: list[tuple[str, str]] = []
    outcome = execute_run(db, run.id, owner="test-owner", lease_seconds=5, handlers=load_handlers(settings, kinds),
                          enqueue=lambda task, run_id: sent.append((task, run_id)))
    assert outcome == "finished"
    with db.transaction() as session:
        finished = runs.load_run(session, run.id)
        assert (finished.status, finished.result) == (RunStatus.COMPLETED.value, {"echo": "hi"})
