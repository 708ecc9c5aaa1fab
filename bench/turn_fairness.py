"""Fairness between sessions when turns continue in place (ADR 0006), against one turn per task (ADR 0004).

    .venv/bin/python -m bench.turn_fairness [--sessions 20] [--turns 6]

N sessions each get one agent run of T turns (T-1 tool calls, then an answer) against a fake model
answering instantly, all enqueued at once, through one worker of 2 processes. Measured twice in the
same run: with BOOCODE_TURN_SLICE_SECONDS=0 (baseline: every turn a task) and with the default slice.
From the model-call spans: when each session's first turn started (the wait to be served), the
longest gap between two turns of one session, and when each run finished. Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from sqlalchemy import select

from bench.common import REPO, scratch, start_worker, stop, wait_until
from orchestrator import services
from orchestrator.domain.enums import MessageRole
from orchestrator.store import projects, runs, sessions, users
from orchestrator.store.models import Run, Span
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from web.queue import TaskQueue


def measure(sessions_count: int, turns: int, slice_seconds: str) -> dict[str, Any]:
    fake = FakeModelServer().start()

    def respond(body: dict[str, Any]) -> Reply:
        """Each session's turn t (t tool results so far) calls a tool until its last turn answers."""
        done = sum(1 for message in body["messages"] if message.get("role") == "tool")
        if done < turns - 1:
            return Reply(tool_calls=[("glob", {"pattern": f"*{done}.none"})], usage=openai_usage(100, 5))
        return Reply(text="done", usage=openai_usage(100, 1))

    fake.responder = respond
    with scratch(BOOCODE_MODEL_BASE_URL=fake.base_url, BOOCODE_MODEL="bench-model",
                 BOOCODE_AGENT_MAX_STEPS=str(turns + 1), BOOCODE_TURN_SLICE_SECONDS=slice_seconds,
                 BOOCODE_LEASE_SECONDS="60") as place:
        db = services.make_database(place.settings)
        with db.transaction() as session:
            owner = users.create_user(session, "bench", is_admin=True)
            project = projects.create_project(session, "bench", str(REPO), owner)
            run_ids = []
            for index in range(sessions_count):
                chat = sessions.create_session(session, project.id, f"s{index}", owner.id)
                run = runs.create_run(session, project_id=project.id, session_id=chat.id, kind="agent",
                                      input={}, created_by=owner.id)
                sessions.add_message(session, chat.id, MessageRole.USER, [{"type": "text", "text": "go"}],
                                     run_id=run.id)
                run_ids.append(run.id)
        worker = start_worker("worker.celery_app", place.settings.to_environment(), f"fair-{place.tag}@bench")
        queue = TaskQueue(place.settings)
        started_at = time.time()
        for run_id in run_ids:
            queue.enqueue_run("agent", run_id)

        def finished() -> bool:
            with db.transaction() as session:
                return all(session.get(Run, run_id, populate_existing=True).status in ("completed", "failed")
                           for run_id in run_ids)

        wait_until(finished, timeout=900)
        with db.transaction() as session:
            figures = summarize(session, run_ids, started_at)
        stop(worker)
        db.dispose()
    fake.stop()
    return figures


def summarize(session: Any, run_ids: list[Any], started_at: float) -> dict[str, Any]:
    first, gaps, ends, claims = [], [], [], []
    for run_id in run_ids:
        starts = sorted(span.started_at.timestamp() for span in session.scalars(
            select(Span).where(Span.run_id == run_id, Span.kind == "model_call")))
        run = session.get(Run, run_id)
        first.append(starts[0] - started_at)
        gaps.append(max((later - earlier for earlier, later in zip(starts, starts[1:])), default=0.0))
        ends.append(run.finished_at.timestamp() - started_at)
        claims.append(run.claims)
    return {"first_p50": statistics.median(first), "first_max": max(first), "gap_max": max(gaps),
            "end_p50": statistics.median(ends), "end_min": min(ends), "end_max": max(ends),
            "claims": sum(claims) / len(claims)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--turns", type=int, default=6)
    arguments = parser.parse_args()
    baseline = measure(arguments.sessions, arguments.turns, "0")
    ours = measure(arguments.sessions, arguments.turns, "5")
    print(f"{arguments.sessions} sessions x {arguments.turns} turns, one worker of 2 processes, instant model")
    print(f"{'':28}{'one turn per task':>20}{'slice 5 s (ADR 0006)':>24}")
    for key, label in (("first_p50", "first turn starts, p50 (s)"), ("first_max", "first turn starts, max (s)"),
                       ("gap_max", "longest gap between turns"), ("end_min", "first run done (s)"),
                       ("end_p50", "runs done, p50 (s)"), ("end_max", "all runs done (s)"),
                       ("claims", "claims per run")):
        print(f"{label:28}{baseline[key]:>20.2f}{ours[key]:>24.2f}")
    print(f"makespan ratio (slice / one turn per task): {ours['end_max'] / baseline['end_max']:.2f}x; "
          f"worst wait for a first turn: {ours['first_max'] / max(baseline['first_max'], 1e-9):.2f}x the baseline's")


if __name__ == "__main__":
    main()
