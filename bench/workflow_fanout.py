"""A workflow of N agent() calls against a zero-latency fake model, next to a bare Celery group.

    .venv/bin/python -m bench.workflow_fanout [--agents 1000] [--concurrency 16]

Baseline: a Celery group of N no-op tasks through the same Redis, one worker of 2 processes.
Ours:     one workflow run whose script is `parallel(N thunks of agent())`, through
          `worker.celery_app` (one worker of 2 processes): every agent is a durable child run with its
          own lease, prompt message, model call over HTTP, journal entry, spans and events, and the
          workflow's ticks replay the script against the journal. The fake model answers at once.
Prints wall time, agents (tasks) per second, peak memory (RSS of the worker's processes and their
sandbox processes, summed) and ticks for both, and the ratios. Asserts nothing.

Then the sandbox's share of a tick, in this process: the same script replayed against a journal that
answers every call (the last tick's work) or none (the first tick's), once through a pooled sandbox
process (`Sandbox`, what ticks use) and once on an isolate in this process (`ScriptSession`, how
ticks ran before scripts moved out of process). The difference is what the process boundary adds
per tick. `--sandbox-only` prints just that.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import psutil
from celery import group
from sqlalchemy import func, select

from bench.common import scratch, start_worker, stop, wait_until
from orchestrator import services
from orchestrator.store import projects, sessions, users
from orchestrator.store.models import Run, WorkflowCall
from orchestrator.workflow.isolate import ScriptSession
from orchestrator.workflow.launch import create_workflow_run
from orchestrator.workflow.sandbox import Sandbox, Settled, replay
from orchestrator.workflow.script import load_script
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import RunStatusWatcher, committed_transactions
from web.queue import TaskQueue

SCRIPT = """export const meta = {name: "fanout", description: "N agents in parallel"};
const results = await parallel(Array.from({length: args.agents}, (_, i) => () => agent("task " + i, {label: "a" + i})));
return results.filter((value) => value !== null).length;
"""


class PeakMemory:
    """Samples the summed RSS of a process and its children every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            try:
                processes = [self.root, *self.root.children(recursive=True)]
                self.peak = max(self.peak, sum(process.memory_info().rss for process in processes))
            except psutil.Error:
                continue

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


TASK_DONE = re.compile(r"task done task=(\S+) run_id=\S+ outcome=(\S+) seconds=([0-9.]+)")


@contextmanager
def logging_tasks_to(path: Path) -> Iterator[None]:
    """Workers started inside log at INFO to `path` (`bench.common.start_worker` reads BENCH_LOG_LEVEL
    and BENCH_WORKER_LOG), so each task's duration can be read back afterwards."""
    saved = {name: os.environ.get(name) for name in ("BENCH_LOG_LEVEL", "BENCH_WORKER_LOG")}
    os.environ.update(BENCH_LOG_LEVEL="INFO", BENCH_WORKER_LOG=str(path))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def task_seconds(log: Path) -> dict[str, list[float]]:
    """Seconds each task took, by task name (`workflows.tick`, `turns.run`), skipped claims left out."""
    seconds: dict[str, list[float]] = {}
    for match in TASK_DONE.finditer(log.read_text(errors="replace") if log.exists() else ""):
        if match.group(2) != "skipped":
            seconds.setdefault(match.group(1), []).append(float(match.group(3)))
    return seconds


def print_task_shares(seconds: dict[str, list[float]], wall: float) -> None:
    busy = 2 * wall  # one worker of 2 processes
    for name, values in sorted(seconds.items()):
        print(f"  {name:14} {len(values):6} tasks, {sum(values):8.2f}s in all ({sum(values) / busy:5.1%} of the "
              f"2 processes' time), median {statistics.median(values) * 1000:7.1f} ms, "
              f"max {max(values) * 1000:7.1f} ms")


def tick_seconds(count: int, answered: bool, out_of_process: bool, repeats: int) -> float:
    """Median time of one tick's sandbox work: open, start, replay `count` calls, state, close."""
    script = load_script(SCRIPT)

    def settle(call: dict[str, Any]) -> Settled | None:
        return Settled(True, "ok", tokens=22) if answered else None

    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        if out_of_process:
            with Sandbox(script, {"agents": count}) as sandbox:
                sandbox.set_budget(None, 0)
                sandbox.start()
                replay(sandbox, settle)
                sandbox.state()
        else:
            session = ScriptSession(script.body, json.dumps({"agents": count}), 2.0, 128 * 1024 * 1024)
            session.set_budget(None, 0)
            session.start()
            replay(session, settle)  # type: ignore[arg-type]  # the same methods, in this process
            session.state()
            session.close()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def print_sandbox_cost(count: int) -> None:
    Sandbox(load_script(SCRIPT), {"agents": 1}).close()  # the pool's process is started once, not per tick
    for calls, answered in ((0, False), (count, False), (count, True)):
        repeats = 30 if calls <= 100 else 5
        inside = tick_seconds(calls, answered, False, repeats)
        outside = tick_seconds(calls, answered, True, repeats)
        what = f"{calls} calls, {'all answered from the journal' if answered else 'none answered yet'}"
        print(f"sandbox work of one tick ({what:45}): in process {inside * 1000:7.1f} ms, "
              f"sandbox process {outside * 1000:7.1f} ms, added {(outside - inside) * 1000:+6.1f} ms"
              + (f" ({(outside - inside) / calls * 1e6:+.0f} us per call)" if calls else ""))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sandbox-only", action="store_true", help="only the sandbox's share of a tick")
    options = parser.parse_args()
    count = options.agents
    if options.sandbox_only:
        print_sandbox_cost(count)
        return

    fake = FakeModelServer().start()
    fake.responder = lambda body: Reply(text="ok", usage=openai_usage(20, 2))
    environment = {"BOOCODE_MODEL_BASE_URL": fake.base_url, "BOOCODE_MODEL": "gpt-4o-mini",
                   "BOOCODE_MODEL_API_KEY": "sk-bench", "BOOCODE_WORKFLOW_CONCURRENCY": str(options.concurrency),
                   "BOOCODE_WORKFLOW_MAX_AGENTS": str(max(count, 1000))}
    with scratch(**environment) as place:
        from bench.noop_app import app as noop_app
        from bench.noop_app import noop

        baseline_worker = start_worker("bench.noop_app", place.noop_environment, f"noop-{place.tag}@bench")
        memory = PeakMemory(baseline_worker.pid)
        started = time.monotonic()
        with noop_app.connection_for_write() as connection:
            group(noop.s() for _ in range(count)).apply_async(connection=connection)
        wait_until(lambda: int(place.redis.get(f"bench-{place.tag}:noop-done") or 0) >= count)
        baseline_seconds = time.monotonic() - started
        baseline_memory = memory.stop()
        stop(baseline_worker)

        db = services.make_database(place.settings)
        with db.transaction() as session:
            owner = users.create_user(session, "bench", is_admin=True)
            project = projects.create_project(session, "bench", "/tmp", owner)
            chat = sessions.create_session(session, project.id, "fanout", owner.id)
            run = create_workflow_run(session, chat, owner.id, load_script(SCRIPT), {"type": "inline"},
                                      {"agents": count}, {"concurrency": options.concurrency})
            run_id = run.id
        log = Path(tempfile.mkdtemp(prefix="bench-fanout-")) / "worker.log"
        commits_before = committed_transactions(place.settings.database_url or "")
        with logging_tasks_to(log):
            worker = start_worker("worker.celery_app", place.settings.to_environment(), f"ours-{place.tag}@bench")
        memory = PeakMemory(worker.pid)
        started = time.monotonic()
        TaskQueue(place.settings).enqueue_run("workflow", run_id)

        with RunStatusWatcher(place.settings.database_url or "", run_id) as watcher:  # adds no commits
            wait_until(lambda: watcher.status() in ("completed", "completed_with_failures", "failed", "cancelled"),
                       timeout=3600)
        ours_seconds = time.monotonic() - started
        ours_memory = memory.stop()
        with db.transaction() as session:
            final = session.get(Run, run_id)
            status, result = final.status, final.result
            recorded = session.scalar(select(func.count()).select_from(WorkflowCall)
                                      .where(WorkflowCall.run_id == run_id, WorkflowCall.status == "completed"))
            ticks, replays = session.execute(select(Run.claims, Run.replays).where(Run.id == run_id)).one()
            moments = sorted(moment for row in session.execute(select(WorkflowCall.started_at, WorkflowCall.finished_at)
                                                               .where(WorkflowCall.run_id == run_id))
                             for moment in row if moment is not None)
            gaps = sorted(((later - earlier).total_seconds() for earlier, later in zip(moments, moments[1:])),
                          reverse=True)[:3]
        stop(worker)
        commits = committed_transactions(place.settings.database_url or "") - commits_before - 1  # less our read
        seconds = task_seconds(log)
        shutil.rmtree(log.parent, ignore_errors=True)
        db.dispose()
    fake.stop()

    print(f"bare celery group of {count} no-op tasks : {baseline_seconds:8.2f}s  "
          f"{count / baseline_seconds:8.1f} tasks/s  "
          f"peak RSS {baseline_memory / 2**20:7.1f} MiB  ({count} tasks, no ticks)")
    print(f"workflow of {count} agent() calls      : {ours_seconds:8.2f}s  {count / ours_seconds:8.1f} agents/s "
          f"peak RSS {ours_memory / 2**20:7.1f} MiB  ({status}; {recorded} results recorded, value "
          f"{(result or {}).get('value')}, {ticks} ticks = {ticks / max(count, 1):.2f} per agent, "
          f"{replays} of them replays; "
          f"longest idle gaps {', '.join(f'{gap:.1f}s' for gap in gaps)})")
    print(f"ratio (ours / baseline)                : {ours_seconds / baseline_seconds:8.1f}x wall time, "
          f"{(ours_seconds - baseline_seconds) / count * 1000:.1f} ms extra per agent, "
          f"{ours_memory / max(baseline_memory, 1):.2f}x memory")
    print(f"commits                                : {commits} = {commits / max(count, 1):.2f} per agent "
          "(pg_stat_database, the workflow's ticks and the worker's start and stop included)")
    print("where the worker's time went (from its log):")
    print_task_shares(seconds, ours_seconds)
    print_sandbox_cost(count)


if __name__ == "__main__":
    main()
