"""A flow's concurrency limits hold under real load: two worker processes, a 40-step DAG of agent steps.

The limits (`max_concurrent` of the flow and of each batch) are what the pure scheduler promises in
its table tests (tests/test_flow_scheduler.py); this checks the shell keeps the promise across
ticks, workers and children finishing at any moment. A sampler thread with its own database
connection counts the steps that are `running` in `flow_steps` every few milliseconds, so the
numbers are the database's, not the logs'. The limits must be reached as well as respected, so the
test fails if gating were too tight or the sampler saw nothing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import WorkerProcess, first_user_text

BATCHES = {"a": 2, "b": 3}
FLOW_LIMIT = 5


def layered_flow() -> tuple[str, dict[str, str | None]]:
    """40 agent steps: root -> 12 in batch a, 12 in batch b, 8 unbatched -> 6 joins of pairs -> one
    final join. After root, 32 steps are ready at once, far more than the limits let run. Returns the
    YAML and each step's batch."""
    batch_of: dict[str, str | None] = {"root": None}
    lines = ["  - {id: root, kind: agent, prompt: step root}"]
    for batch in ("a", "b"):
        for index in range(12):
            batch_of[f"{batch}{index}"] = batch
            lines.append(f"  - {{id: {batch}{index}, kind: agent, prompt: step {batch}{index}, deps: [root], "
                         f"batch: {batch}}}")
    for index in range(8):
        batch_of[f"u{index}"] = None
        lines.append(f"  - {{id: u{index}, kind: agent, prompt: step u{index}, deps: [root]}}")
    for index in range(6):
        batch_of[f"m{index}"] = None
        deps = [f"a{2 * index}", f"a{2 * index + 1}", f"b{2 * index}", f"b{2 * index + 1}"]
        lines.append(f"  - {{id: m{index}, kind: agent, prompt: step m{index}, deps: [{', '.join(deps)}]}}")
    batch_of["join"] = None
    finals = [f"m{index}" for index in range(6)] + [f"u{index}" for index in range(8)]
    lines.append(f"  - {{id: join, kind: agent, prompt: step join, deps: [{', '.join(finals)}]}}")
    text = (f"name: layered\nmax_concurrent: {FLOW_LIMIT}\nbatches:\n"
            + "".join(f"  {name}: {{max_concurrent: {limit}}}\n" for name, limit in BATCHES.items())
            + "steps:\n" + "\n".join(lines) + "\noutput: join\n")
    return text, batch_of


class RunningSampler:
    """Counts the run's `running` steps, in all and per batch, every `interval` seconds, on a
    connection of its own (autocommit: each sample sees what is committed at that moment)."""

    def __init__(self, database_url: str, run_id: str, batch_of: dict[str, str | None], interval: float = 0.01):
        self.connection = psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True)
        self.run_id, self.batch_of, self.interval = run_id, batch_of, interval
        self.samples = 0
        self.peak_total = 0
        self.peak_in: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            running = [row[0] for row in self.connection.execute(
                "SELECT step_id FROM flow_steps WHERE run_id = %s AND state = 'running'", (self.run_id,))]
            in_batch = Counter(batch for step in running if (batch := self.batch_of[step]) is not None)
            self.samples += 1
            self.peak_total = max(self.peak_total, len(running))
            for batch, count in in_batch.items():
                self.peak_in[batch] = max(self.peak_in[batch], count)

    def __enter__(self) -> "RunningSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.connection.close()


def test_two_workers_never_exceed_the_flow_and_batch_limits_and_reach_them(
        make_stack: Any, fake: FakeModelServer, tmp_path: Path) -> None:
    # each answer streams for about 0.2 s, so steps overlap and the limits are what holds them back
    fake.responder = lambda body: Reply(text=f"done {first_user_text(body)}", chunk_delay=0.05,
                                        usage=openai_usage(20, 5))
    stack = make_stack(model_base_url=fake.base_url, model_name="gpt-4o-mini", model_api_key="sk-fake")
    root = tmp_path / "root"
    (root / ".boocode" / "flows").mkdir(parents=True)
    text, batch_of = layered_flow()
    (root / ".boocode" / "flows" / "layered.yaml").write_text(text)
    project = stack.api.ok("POST", "/api/projects", {"name": "limits", "root_path": str(root)}, expected=201)["project"]
    workers = [WorkerProcess(stack.settings, tmp_path, name=f"limits-{index}@localhost", concurrency=2)
               for index in range(2)]
    with ThreadPoolExecutor(2) as pool:  # started (and stopped) side by side: each takes seconds
        list(pool.map(WorkerProcess.start, workers))
    try:
        run = stack.api.ok("POST", f"/api/projects/{project['id']}/flows/layered/runs", {}, expected=202)["run"]
        with RunningSampler(stack.settings.database_url, run["id"], batch_of) as sampler:
            started = time.monotonic()
            stack.api.wait_for_run(run["id"], ("completed", "completed_with_failures", "failed", "cancelled"),
                                   timeout=45)
            elapsed = time.monotonic() - started
        status = stack.api.ok("GET", f"/api/flow-runs/{run['id']}")
    finally:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(WorkerProcess.stop, workers))

    assert status["run"]["status"] == "completed", status
    assert sampler.samples > 100, f"the sampler ran {sampler.samples} times in {elapsed:.1f}s"
    # never above the limits ...
    assert sampler.peak_total <= FLOW_LIMIT, sampler.peak_total
    assert all(sampler.peak_in[batch] <= limit for batch, limit in BATCHES.items()), dict(sampler.peak_in)
    # ... and each one reached: gating that held steps back more than asked would fail here
    assert sampler.peak_total == FLOW_LIMIT and dict(sampler.peak_in) == BATCHES, (sampler.peak_total,
                                                                                  dict(sampler.peak_in))
    # every step ran once: one attempt, one result, one model call
    assert {step["id"]: (step["state"], step["attempt"]) for step in status["steps"]} == {
        step: ("completed", 1) for step in batch_of}
    assert all(step["result"] == f"done step {step['id']}" for step in status["steps"])
    prompts = Counter(first_user_text(request["body"]) for request in fake.requests)
    assert prompts == Counter({f"step {step}": 1 for step in batch_of}), prompts
    assert status["value"] == "done step join"
