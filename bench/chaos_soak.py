"""Chaos soak: agent runs and a 50-agent workflow while workers are killed at random (local only).

    .venv/bin/python -m bench.chaos_soak [--runs 20] [--agents 50] [--seconds 120]

Two worker processes run N chat agent runs (each appends one line naming itself to a file through
`run_command`, a mutating side effect, then answers) and one workflow of `--agents` agents, against
the fake model (each call streams for about 0.3 s). A killer `kill -9`s a random worker's whole
process group every 2–6 s and starts a new one, for `--seconds` or until everything has finished,
whichever comes first; then the survivors finish the work. Everything is bounded: loopback only,
a fixed number of runs, and a hard stop at `--seconds` + 300 s.

Prints: runs and their outcomes, kills, repeated side effects (a line written twice), duplicate
results (two tool messages for one tool call), event gaps or duplicates per session, and takeover
latency (kill -> `run.resumed` of each run the dead worker held, which includes waiting for a free
worker slot while the replacement worker starts) and the part the sweep owns (the dead holder's
lease expiry -> the new claim): p50 / p99 / max, against lease + 2 x sweep interval. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.common import scratch, start_worker, wait_until
from orchestrator import services
from orchestrator.domain.enums import MessageRole
from orchestrator.store import projects, sessions, users
from orchestrator.store.models import Event, Message, Run
from orchestrator.workflow.launch import create_workflow_run
from orchestrator.workflow.script import load_script
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from web.queue import TaskQueue

SCRIPT = """export const meta = {name: "soak", description: "agents in parallel"};
const results = await parallel(
  Array.from({length: args.agents}, (_, i) => () => agent("agent " + i, {label: "a" + i})));
return results.filter((value) => value !== null).length;
"""
ENDED = ("completed", "completed_with_failures", "failed", "cancelled")


def answer(body: dict[str, Any]) -> Reply:
    """The fake model: a chat run's first call appends its name to effects.log, then it answers."""
    messages = body.get("messages", [])
    last = messages[-1] if messages else {}
    user_text = next((str(message.get("content")) for message in messages if message.get("role") == "user"), "")
    slow = {"chunk_size": 4, "chunk_delay": 0.05, "usage": openai_usage(50, 5)}
    if last.get("role") == "user" and user_text.startswith("effect-"):
        name = user_text.split()[0]
        return Reply(tool_calls=[("run_command", {"argv": ["sh", "-c", f"echo {name} >> effects.log"]})], **slow)
    return Reply(text="done " * 6, **slow)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=120)
    options = parser.parse_args()
    fake = FakeModelServer().start()
    fake.responder = answer
    root = Path(tempfile.mkdtemp(prefix="soak-"))
    environment = {"BOOCODE_MODEL_BASE_URL": fake.base_url, "BOOCODE_MODEL": "gpt-4o-mini",
                   "BOOCODE_LEASE_SECONDS": "3", "BOOCODE_RECOVERY_INTERVAL_SECONDS": "0.5",
                   "BOOCODE_REQUEUE_AFTER_SECONDS": "300", "BOOCODE_WORKFLOW_CONCURRENCY": "8",
                   "BOOCODE_DATA_DIR": str(root / "data")}
    with scratch(**environment) as place:
        settings = place.settings
        db = services.make_database(settings)
        with db.transaction() as session:
            owner = users.create_user(session, "soak", is_admin=True)
            project = projects.create_project(session, "soak", str(root), owner)
            project.approval_policy = {"rules": [{"tool": "run_command", "decision": "allow"}]}
            chats, run_ids = [], []
            for index in range(options.runs):
                chat = sessions.create_session(session, project.id, f"chat {index}", owner.id)
                run = runs_create(session, project.id, chat.id, owner.id)
                sessions.add_message(session, chat.id, MessageRole.USER,
                                     [{"type": "text", "text": f"effect-{index} go"}], run_id=run.id)
                chats.append(chat.id)
                run_ids.append(run.id)
            flow_chat = sessions.create_session(session, project.id, "workflow", owner.id)
            workflow = create_workflow_run(session, flow_chat, owner.id, load_script(SCRIPT), {"type": "inline"},
                                           {"agents": options.agents}, {"concurrency": 8})
            chats.append(flow_chat.id)
            workflow_id = workflow.id
        names = iter(range(10_000))
        workers = [start_worker("worker.celery_app", settings.to_environment(), f"soak-{next(names)}-{place.tag}@bench")
                   for _ in range(2)]
        queue = TaskQueue(settings)
        for run_id in run_ids:
            queue.enqueue_run("agent", run_id)
        queue.enqueue_run("workflow", workflow_id)
        started = time.monotonic()
        kills: list[datetime] = []
        stop_killing = threading.Event()

        def all_ended() -> bool:
            with db.transaction() as session:
                statuses = session.scalars(select(Run.status).where(Run.id.in_([*run_ids, workflow_id]))).all()
            return all(status in ENDED for status in statuses)

        def killer() -> None:
            chooser = random.Random(11)
            while not stop_killing.wait(chooser.uniform(2, 6)):
                if time.monotonic() - started > options.seconds:
                    return
                index = chooser.randrange(len(workers))
                os.killpg(workers[index].pid, signal.SIGKILL)
                workers[index].wait()
                kills.append(datetime.now(timezone.utc))
                workers[index] = start_worker("worker.celery_app", settings.to_environment(),
                                              f"soak-{next(names)}-{place.tag}@bench")

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        wait_until(all_ended, timeout=options.seconds + 300)
        stop_killing.set()
        thread.join()
        elapsed = time.monotonic() - started
        report(db, run_ids, workflow_id, chats, kills, root, settings, elapsed)
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
        db.dispose()
    fake.stop()


def runs_create(session: Any, project_id: Any, session_id: Any, owner_id: Any) -> Run:
    from orchestrator.store import runs

    return runs.create_run(session, project_id=project_id, session_id=session_id, kind="agent", input={},
                           created_by=owner_id)


def report(db: Any, run_ids: list[Any], workflow_id: Any, chats: list[Any], kills: list[datetime], root: Path,
           settings: Any, elapsed: float) -> None:
    with db.transaction() as session:
        statuses = Counter(session.scalars(select(Run.status).where(Run.id.in_(run_ids))).all())
        workflow = session.get(Run, workflow_id)
        children = Counter(session.scalars(select(Run.status).where(Run.parent_id == workflow_id)).all())
        tool_calls = Counter(part.get("tool_call_id") for message in session.scalars(
            select(Message).where(Message.session_id.in_(chats), Message.role == "tool"))
            for part in message.parts if part.get("type") == "tool_result")
        gaps = duplicates = 0
        for chat in chats:
            seqs = session.scalars(select(Event.seq).where(Event.session_id == chat).order_by(Event.seq)).all()
            duplicates += len(seqs) - len(set(seqs))
            gaps += sum(1 for earlier, later in zip(seqs, seqs[1:]) if later != earlier + 1)
        resumed_rows = session.execute(select(Event.created_at, Event.data).where(Event.session_id.in_(chats),
                                                                                 Event.type == "run.resumed")).all()
    resumed = [created for created, _ in resumed_rows]
    after_expiry = [(created - datetime.fromisoformat(data["lease_expired_at"])).total_seconds()
                    for created, data in resumed_rows if data.get("lease_expired_at")]
    effects = Counter((root / "effects.log").read_text().split()) if (root / "effects.log").exists() else Counter()
    takeovers = []
    for moment in resumed:
        before = [kill for kill in kills if kill <= moment]
        if before:
            takeovers.append((moment - before[-1]).total_seconds())
    target = settings.lease_seconds + 2 * settings.recovery_interval_seconds
    print(f"{len(run_ids)} agent runs: {dict(statuses)}; workflow {workflow.status} "
          f"(value {(workflow.result or {}).get('value')}, agents {dict(children)}) in {elapsed:.0f}s")
    print(f"kills: {len(kills)} (kill -9 of a whole worker, a new one started at once)")
    print(f"repeated side effects: {sum(count - 1 for count in effects.values() if count > 1)} "
          f"({len(effects)} of {len(run_ids)} runs wrote their line)")
    print(f"duplicate results: {sum(count - 1 for count in tool_calls.values() if count > 1)}; "
          f"event gaps: {gaps}; duplicate seqs: {duplicates}")
    if takeovers:
        print(f"takeover after a kill (n={len(takeovers)}): p50 {statistics.median(takeovers):.2f}s  "
              f"p99 {percentile(takeovers, 0.99):.2f}s  max {max(takeovers):.2f}s  "
              f"(target <= lease + 2 x sweep = {target:.1f}s; includes waiting for a free worker slot)")
    if after_expiry:
        print(f"claim after the dead holder's lease expired (n={len(after_expiry)}): p50 "
              f"{statistics.median(after_expiry):.2f}s  p99 {percentile(after_expiry, 0.99):.2f}s  "
              f"max {max(after_expiry):.2f}s  (sweep interval {settings.recovery_interval_seconds:.1f}s)")
    else:
        print("takeover after a kill: no run was held by a killed worker")


if __name__ == "__main__":
    main()
