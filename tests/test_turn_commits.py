"""Commits per agent turn, counted by Postgres itself (pg_stat_database.xact_commit of the stack's own
database), so a change that adds transactions to a turn shows here (docs/turns.md has the budget).

Two runs through a real worker against the fake model: one of 2 turns and one of 7 (each turn but the
last makes one tool call). The worker is stopped after each, so every backend has flushed its
statistics when they are read; what both runs pay alike (the worker's start and stop, the claim, the
run's end) cancels out, and the difference is the cost of 5 tool-calling turns.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from orchestrator.domain.enums import MessageRole
from orchestrator.domain.keys import model_key
from orchestrator.store import projects, runs, sessions, users
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import RunStatusWatcher, WorkerProcess, committed_transactions, wait_for
from web.queue import TaskQueue

MODEL_CALL_COMMITS = 2  # the turn's read with the call's begin, finish (docs/turns.md)
TOOL_CALL_COMMITS = 2   # begin, finish


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
    before = committed_transactions(stack.settings.database_url)
    # one pool process: what a worker does at start (its processes connecting, the first sweep) is then the
    # same for both runs, so it cancels out exactly
    worker = WorkerProcess(stack.settings, tmp_path, name=f"commits-{turns}@localhost", concurrency=1).start()
    TaskQueue(stack.settings).enqueue_run("agent", run.id)

    with RunStatusWatcher(stack.settings.database_url, run.id) as watcher:
        wait_for(lambda: watcher.status() == "completed", 60, 0.2, f"the {turns}-turn run to complete")
    worker.stop()
    return committed_transactions(stack.settings.database_url) - before


def test_a_tool_calling_turn_costs_at_most_four_commits(make_stack, fake: FakeModelServer,  # type: ignore[no-untyped-def]
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


def test_a_final_answer_and_the_run_end_commit_together(make_stack, fake: FakeModelServer,  # type: ignore[no-untyped-def]
                                                        tmp_path: Path) -> None:
    """The last model call's journal entry, its message and the run's end are one transaction: Postgres
    stamps every row a transaction writes with its id (xmin), so the three rows must share one."""
    stack = make_stack(model_base_url=fake.base_url, model_name="gpt-4o-mini", agent_max_steps=10)
    root = tmp_path / "root"
    root.mkdir()
    (root / "README.md").write_text("# demo\n")
    fake.script(Reply(tool_calls=[("glob", {"pattern": "*.md"})], usage=openai_usage(50, 5)),
                Reply(text="done", usage=openai_usage(50, 1)))
    with stack.db.transaction() as session:
        owner = users.create_user(session, "owner")
        project = projects.create_project(session, "p", str(root), owner)
        chat = sessions.create_session(session, project.id, "s", owner.id)
        run = runs.create_run(session, project_id=project.id, session_id=chat.id, kind="agent", input={},
                              created_by=owner.id)
        sessions.add_message(session, chat.id, MessageRole.USER, [{"type": "text", "text": "go"}], run_id=run.id)
    worker = WorkerProcess(stack.settings, tmp_path, name="end-together@localhost", concurrency=1).start()
    TaskQueue(stack.settings).enqueue_run("agent", run.id)
    with RunStatusWatcher(stack.settings.database_url, run.id) as watcher:
        wait_for(lambda: watcher.status() == "completed", 60, 0.2, "the run to complete")
    worker.stop()
    with stack.db.transaction() as session:
        step = session.execute(text("SELECT xmin::text FROM steps WHERE run_id = :run AND step_key = :key"),
                               {"run": run.id, "key": model_key(1)}).scalar_one()
        first = session.execute(text("SELECT xmin::text FROM steps WHERE run_id = :run AND step_key = :key"),
                                {"run": run.id, "key": model_key(0)}).scalar_one()
        ended = session.execute(text("SELECT xmin::text FROM runs WHERE id = :run"), {"run": run.id}).scalar_one()
        answer = session.execute(text("SELECT xmin::text FROM messages WHERE run_id = :run AND role = 'assistant' "
                                      "ORDER BY seq DESC LIMIT 1"), {"run": run.id}).scalar_one()
        finished = session.execute(text("SELECT xmin::text FROM events WHERE run_id = :run AND type = 'run.finished'"),
                                   {"run": run.id}).scalar_one()
    assert step == ended == answer == finished, (step, ended, answer, finished)
    assert first != step, "the first (tool-calling) turn's call must have committed on its own"
