"""Commits per agent turn, counted by Postgres itself (pg_stat_database.xact_commit of the stack's own
database), so a change that adds transactions to a turn shows here (docs/turns.md has the budget).

Two runs through a real worker against the fake model: one of 2 turns and one of 7 (each turn but the
last makes one tool call). The worker is stopped after each, so every backend has flushed its
statistics when they are read; what both runs pay alike (the worker's start and stop, the claim, the
run's end) cancels out, and the difference is the cost of 5 tool-calling turns.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from orchestrator.domain.enums import MessageRole
from orchestrator.store import projects, runs, sessions, users
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import WorkerProcess, wait_for
from web.queue import TaskQueue

MODEL_CALL_COMMITS = 3  # the turn's read, begin, finish (docs/turns.md)
TOOL_CALL_COMMITS = 2   # begin, finish


def committed(admin_url: str, database: str) -> int:
    """xact_commit of `database`, read from another database so the reading itself is not counted, once it
    has stopped moving (a backend's last statistics reach the shared counters just after it exits)."""
    with psycopg.connect(admin_url.replace("+psycopg", ""), autocommit=True) as connection:
        def read() -> int:
            row = connection.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s",
                                     (database,)).fetchone()
            return int(row[0]) if row else 0

        last, stable_since = read(), time.monotonic()
        while time.monotonic() - stable_since < 1.5:
            time.sleep(0.1)
            now = read()
            if now != last:
                last, stable_since = now, time.monotonic()
        return last


def run_agent(stack, fake: FakeModelServer, root: Path, turns: int, tmp_path: Path) -> int:  # type: ignore[no-untyped-def]
    """Commits made while a worker started, ran one agent run of `turns` turns to completion and stopped."""
    fake.script(*[Reply(tool_calls=[("glob", {"pattern": f"*{index}.md"})], usage=openai_usage(50, 5))
                  for index in range(turns - 1)], Reply(text="done", usage=openai_usage(50, 1)))
    with stack.db.transaction() as session:
        owner = users.create_user(session, f"owner-{turns}")
        project = projects.create_project(session, f"p{turns}", str(root), owner)
        chat = sessions.create_session(session, project.id, "s", owner.id)
        run = runs.create_run(session, project_id=project.id, session_id=chat.id, kind="agent", input={},
                              created_by=owner.id)
        sessions.add_message(session, chat.id, MessageRole.USER, [{"type": "text", "text": "go"}], run_id=run.id)
    stack.db.dispose()
    database = stack.settings.database_url.rsplit("/", 1)[1].split("?")[0]
    admin_url = stack.settings.database_url.rsplit("/", 1)[0] + "/postgres"
    before = committed(admin_url, database)
    worker = WorkerProcess(stack.settings, tmp_path, name=f"commits-{turns}@localhost").start()
    TaskQueue(stack.settings).enqueue_run("agent", run.id)

    with psycopg.connect(stack.settings.database_url.replace("+psycopg", "")) as watcher:
        def status() -> str:
            row = watcher.execute("SELECT status FROM runs WHERE id = %s", (run.id,)).fetchone()
            watcher.rollback()  # a rolled-back read is an xact_rollback: watching adds no commit
            return str(row[0])

        wait_for(lambda: status() == "completed", 60, 0.2, f"the {turns}-turn run to complete")
    worker.stop()
    return committed(admin_url, database) - before


def test_a_tool_calling_turn_costs_at_most_five_commits(make_stack, fake: FakeModelServer,  # type: ignore[no-untyped-def]
                                                        tmp_path: Path) -> None:
    stack = make_stack(model_base_url=fake.base_url, model_name="gpt-4o-mini", agent_max_steps=10,
                       # nothing but the run: no lease renewal, sweep or mid-stream delta flush within it
                       lease_seconds=120.0, recovery_interval_seconds=3600.0, requeue_after_seconds=3600.0,
                       stream_flush_seconds=60.0)
    root = tmp_path / "root"
    root.mkdir()
    (root / "README.md").write_text("# demo\n")
    short = run_agent(stack, fake, root, 2, tmp_path)
    long = run_agent(stack, fake, root, 7, tmp_path)
    per_turn = (long - short) / 5
    print(f"commits: 2-turn run {short}, 7-turn run {long}, {per_turn:.1f} per tool-calling turn")
    assert per_turn <= MODEL_CALL_COMMITS + TOOL_CALL_COMMITS, (short, long)
    assert per_turn >= 4, "fewer commits than steps: is the journal still written per step?"
