"""A flow of N `code` steps (no model) against N bare Celery tasks chained by dependency, in one run.

    .venv/bin/python -m bench.flow_overhead [--steps 200] [--shape chain|wide|both] [--no-profile]

Shapes, the same for both sides:
  chain  s0 -> s1 -> … -> s(N-1): each step adds one to the one before (the honest worst case: every
         step waits for the previous one, so every per-step cost is on the critical path).
  wide   root -> N-2 leaves -> join: the leaves fan out from root and the join waits for them all.
Ours:     one flow run through `worker.celery_app` (one worker of 2 processes); code steps run in
          the workflow sandbox inside the run's ticks (orchestrator/flows/runner.py).
Baseline: bare Celery tasks through the same Redis (one worker of 2 processes): a chain link does
          the trivial work and enqueues the next; a leaf counts itself in Redis and the last one to
          finish enqueues the join (dependency tracking without a result backend).
Prints the wall time of each, the ratio, and the scheduling delay per step: from the moment a
step's last dependency finished to its own start (flow_steps timestamps; for the baseline, each
task's own stamps in Redis). A code step's `started_at` is stamped in the transaction that records
it, after the sandbox ran it, so its delay includes its evaluation. Then the same chain once more in
this process, under cProfile (`execute_run` called in a loop, as the queue would), and the top costs.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from sqlalchemy import select

from bench.common import Scratch, scratch, start_worker, stop, wait_until
from bench.workflow_fanout import TASK_DONE, logging_tasks_to, print_task_shares
from orchestrator import lifecycle, services
from orchestrator.domain.enums import RunStatus
from orchestrator.flows import launch
from orchestrator.flows.discovery import discover
from orchestrator.jobs import broker_url
from orchestrator.runkinds import load_finish_hooks, load_handlers
from orchestrator.store import flows as flow_store
from orchestrator.store import projects, sessions, users
from orchestrator.store.database import Database
from orchestrator.store.models import Run
from tests.support import RunStatusWatcher
from web.queue import TaskQueue

DONE = ("completed", "completed_with_failures", "failed", "cancelled")


# --- the baseline: bare Celery tasks, the same shapes --------------------------------------------


def baseline_app(redis_url: str, prefix: str) -> Celery:
    """Bare Celery with our queue settings (late acks, prefetch 1, no result backend). Each task stamps
    its start and the moment its result is ready in Redis (`{prefix}:{token}:hops`), for the delays;
    `token` keeps one measurement's keys apart from another's."""
    app = Celery("bench-flow-baseline")
    app.conf.update(broker_url=broker_url(redis_url), task_acks_late=True, task_reject_on_worker_lost=True,
                    worker_prefetch_multiplier=1, task_ignore_result=True,
                    broker_transport_options={"global_keyprefix": f"{prefix}:flow-baseline:"})
    store = redis.Redis.from_url(redis_url)

    def stamp(token: str, name: str, started: float) -> None:
        store.rpush(f"{prefix}:{token}:hops", f"{name} {started} {time.time()}")

    @app.task(name="bench.flow.link")
    def link(token: str, index: int, total: int, value: int) -> None:
        started = time.time()
        stamp(token, f"s{index}", started)
        if index + 1 < total:
            link.delay(token, index + 1, total, value + 1)
        else:
            store.set(f"{prefix}:{token}:done", value + 1)

    @app.task(name="bench.flow.root")
    def root(token: str, leaves: int) -> None:
        stamp(token, "root", time.time())
        for index in range(leaves):
            leaf.delay(token, index, leaves)

    @app.task(name="bench.flow.leaf")
    def leaf(token: str, index: int, leaves: int) -> None:
        started = time.time()
        stamp(token, f"w{index}", started)
        if store.incr(f"{prefix}:{token}:leaves") == leaves:  # the last leaf to finish starts the join
            join.delay(token, leaves)

    @app.task(name="bench.flow.join")
    def join(token: str, leaves: int) -> None:
        stamp(token, "join", time.time())
        store.set(f"{prefix}:{token}:done", leaves)

    return app


# the worker process imports this module (`celery --app bench.flow_overhead`) with the environment set
app = baseline_app(os.environ["BENCH_REDIS_URL"], os.environ["BENCH_PREFIX"]) if "BENCH_PREFIX" in os.environ \
    else None


def upstream_of(shape: str, steps: int) -> dict[str, list[str]]:
    """Each step's dependencies, the one description both sides are built and measured from."""
    if shape == "chain":
        return {f"s{index}": ([f"s{index - 1}"] if index else []) for index in range(steps)}
    leaves = [f"w{index}" for index in range(steps - 2)]
    return {"root": [], **{leaf: ["root"] for leaf in leaves}, "join": leaves}


Stamps = dict[str, tuple[float, float]]  # step -> (started, finished or ready), epoch seconds


def time_baseline(place: Scratch, sender: Celery, shape: str, steps: int) -> tuple[float, Stamps]:
    """Seconds for one shape of bare tasks, and each task's (start, ready) stamps."""
    prefix, token = place.noop_environment["BENCH_PREFIX"], uuid.uuid4().hex[:8]
    started = time.monotonic()
    if shape == "chain":
        sender.send_task("bench.flow.link", args=[token, 0, steps, 0])
    else:
        sender.send_task("bench.flow.root", args=[token, steps - 2])
    wait_until(lambda: place.redis.get(f"{prefix}:{token}:done") is not None)
    seconds = time.monotonic() - started
    stamps = {}
    for line in place.redis.lrange(f"{prefix}:{token}:hops", 0, -1):
        name, start, ready = (line.decode() if isinstance(line, bytes) else str(line)).split()
        stamps[name] = (float(start), float(ready))
    return seconds, stamps


def median_of(rounds: list[Any]) -> Any:
    """The round with the median time (the first element of a baseline's pair, an Ours' seconds)."""
    ordered = sorted(rounds, key=lambda measured: measured[0] if isinstance(measured, tuple) else measured.seconds)
    return ordered[len(ordered) // 2]


def run_baseline(place: Scratch, shapes: tuple[str, ...], steps: int,
                 rounds: int = 1) -> dict[str, list[tuple[float, Stamps]]]:
    """Each shape through one warm worker (a two-link chain first, so its start is not counted)."""
    sender = baseline_app(place.noop_environment["BENCH_REDIS_URL"], place.noop_environment["BENCH_PREFIX"])
    worker = start_worker("bench.flow_overhead", place.noop_environment, f"flow-baseline-{place.tag}@bench")
    try:
        time_baseline(place, sender, "chain", 2)
        return {shape: [time_baseline(place, sender, shape, steps) for _ in range(rounds)] for shape in shapes}
    finally:
        stop(worker)


# --- ours: a flow run of code steps ---------------------------------------------------------------


def flow_text(shape: str, steps: int) -> str:
    """The flow: each step does the same trivial arithmetic as its baseline task."""
    upstream = upstream_of(shape, steps)
    lines = [f"name: overhead-{shape}", "steps:"]
    for step, deps in upstream.items():
        if shape == "chain":
            code = f"steps.{deps[0]}.result + 1" if deps else "1"
        else:
            code = {"root": "0", "join": str(steps - 2)}.get(step, f"steps.root.result + {step[1:]}")
        lines.append(f"  - {{id: {step}, kind: code, code: \"{code}\"" + (f", deps: [{', '.join(deps)}]}}" if deps
                                                                          else "}"))
    lines.append(f"output: {list(upstream)[-1]}")
    return "\n".join(lines) + "\n"


def create_flow_run(db: Database, shape: str, steps: int, root: Path) -> uuid.UUID:
    """A queued flow run the way the API starts one: discovered from the project, then launch.start."""
    folder = root / ".boocode" / "flows"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"overhead-{shape}.yaml").write_text(flow_text(shape, steps))
    found, refused = discover(root, None)
    assert not refused, refused
    with db.transaction() as session:
        owner = users.create_user(session, f"bench-{uuid.uuid4().hex[:6]}", is_admin=True)
        project = projects.create_project(session, "bench", str(root), owner)
        chat = sessions.create_session(session, project.id, "flow overhead", owner.id)
        run = launch.start(session, chat, owner.id, found[f"overhead-{shape}"], None, {"type": "bench"})
        return run.id


@dataclass(frozen=True)
class Ours:
    seconds: float
    status: str
    value: Any
    ticks: int
    stamps: Stamps  # from flow_steps: started_at, finished_at
    tasks: dict[str, list[float]]


def tasks_since(log: Path, offset: int) -> dict[str, list[float]]:
    """Seconds each task took, from what the worker logged after `offset` (bench.workflow_fanout's reader)."""
    seconds: dict[str, list[float]] = {}
    text = log.read_bytes()[offset:].decode(errors="replace") if log.exists() else ""
    for match in TASK_DONE.finditer(text):
        if match.group(2) != "skipped":
            seconds.setdefault(match.group(1), []).append(float(match.group(3)))
    return seconds


def time_flow(place: Scratch, db: Database, root: Path, log: Path, shape: str, steps: int) -> Ours:
    run_id = create_flow_run(db, shape, steps, root)
    offset = log.stat().st_size if log.exists() else 0
    started = time.monotonic()
    TaskQueue(place.settings).enqueue_run("flow", run_id)
    with RunStatusWatcher(place.settings.database_url or "", run_id) as watcher:
        wait_until(lambda: watcher.status() in DONE, timeout=1800)
    seconds = time.monotonic() - started
    time.sleep(0.5)  # the worker logs the last tick just after it commits
    with db.transaction() as session:
        run = session.get(Run, run_id)
        assert run is not None
        status, value, ticks = run.status, (run.result or {}).get("value"), run.claims
        stamps = {row.step_id: (row.started_at.timestamp(), row.finished_at.timestamp())
                  for row in flow_store.load_steps(session, run_id).values()
                  if row.started_at is not None and row.finished_at is not None}
    return Ours(seconds, str(status), value, ticks, stamps, tasks_since(log, offset))


def run_ours(place: Scratch, shapes: tuple[str, ...], steps: int, rounds: int = 1) -> dict[str, list[Ours]]:
    """Each shape as a flow run through one warm worker (a two-step flow first: the worker's imports
    and its sandbox process are not counted, as the baseline's worker start is not)."""
    db = services.make_database(place.settings)
    root = Path(tempfile.mkdtemp(prefix="bench-flow-"))
    log = root / "worker.log"
    with logging_tasks_to(log):
        worker = start_worker("worker.celery_app", place.settings.to_environment(), f"flow-{place.tag}@bench")
    try:
        time_flow(place, db, root, log, "chain", 2)
        return {shape: [time_flow(place, db, root, log, shape, steps) for _ in range(rounds)] for shape in shapes}
    finally:
        stop(worker)
        db.dispose()
        shutil.rmtree(root, ignore_errors=True)


# --- figures --------------------------------------------------------------------------------------


def delays(upstream: dict[str, list[str]], stamps: Stamps) -> list[float]:
    """Per step with dependencies: its start minus its last dependency's finish, in seconds."""
    found = []
    for step, deps in upstream.items():
        if deps and step in stamps and all(dep in stamps for dep in deps):
            found.append(stamps[step][0] - max(stamps[dep][1] for dep in deps))
    return found


def describe(values: list[float]) -> str:
    if not values:
        return "no steps measured"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return (f"mean {statistics.fmean(values) * 1000:7.1f} ms, p50 {statistics.median(values) * 1000:7.1f} ms, "
            f"p95 {p95 * 1000:7.1f} ms, max {max(values) * 1000:7.1f} ms")


def longest_gaps(stamps: Stamps, count: int = 3) -> list[float]:
    """The longest stretches with no step starting or finishing: stalls, if there are any."""
    moments = sorted(moment for pair in stamps.values() for moment in pair)
    return sorted((later - earlier for earlier, later in zip(moments, moments[1:])), reverse=True)[:count]


def report(shape: str, steps: int, baselines: list[tuple[float, Stamps]], rounds: list[Ours]) -> None:
    """The median round of each side (and every round's time: the machine is shared, the spread shows it)."""
    upstream = upstream_of(shape, steps)
    base_seconds, base_stamps = median_of(baselines)
    ours = median_of(rounds)
    print(f"\n== {shape}: {steps} steps, median of {len(rounds)} rounds ==")
    print(f"bare celery tasks : {base_seconds:7.2f}s = {base_seconds / steps * 1000:6.1f} ms/step "
          f"(rounds {', '.join(f'{seconds:.2f}s' for seconds, _ in baselines)})")
    print(f"flow of code steps: {ours.seconds:7.2f}s = {ours.seconds / steps * 1000:6.1f} ms/step ({ours.status}, "
          f"value {ours.value}, {ours.ticks} ticks; longest gaps with nothing moving "
          f"{', '.join(f'{gap:.2f}s' for gap in longest_gaps(ours.stamps))}; "
          f"rounds {', '.join(f'{one.seconds:.2f}s' for one in rounds)})")
    print(f"ratio             : {ours.seconds / base_seconds:7.1f}x the bare tasks (target <= 3x)")
    print(f"scheduling delay, flow  : {describe(delays(upstream, ours.stamps))}")
    print(f"scheduling delay, celery: {describe(delays(upstream, base_stamps))}")
    print("where the flow worker's time went (from its log):")
    print_task_shares(ours.tasks, ours.seconds)


# --- the profile ----------------------------------------------------------------------------------


def tick_in_process(db: Database, settings: Any, handlers: dict[str, Any], hooks: dict[str, Any],
                    run_id: uuid.UUID, steps: int) -> tuple[int, str]:
    """The flow run's ticks in this process, back to back: `execute_run` again whenever the run is
    queued, whether a tick enqueued it or left it for the recovery sweep. (execute_run calls, status)."""
    calls, status = 0, "queued"
    while status not in DONE:
        lifecycle.execute_run(db, run_id, owner="bench-profile", lease_seconds=settings.lease_seconds,
                              handlers=handlers, enqueue=lambda task, run: None, on_finish=hooks)
        calls += 1
        with db.transaction() as session:
            status = str(session.scalar(select(Run.status).where(Run.id == run_id)))
        if status == RunStatus.RUNNING or calls > 10 * steps:
            raise SystemExit(f"the in-process tick loop found the run {status} after {calls} calls")
    return calls, status


# (module path, function): the parts of a tick, by the cumulative time cProfile gives each
TICK_PARTS = (
    ("orchestrator/flows/runner.py", "tick", "a tick, in all"),
    ("orchestrator/flows/evaluation.py", "evaluate_codes", "code steps in the sandbox (evaluation.evaluate_codes)"),
    ("orchestrator/workflow/sandbox.py", "_open", "  of which taking a sandbox process (Evaluator._open)"),
    ("orchestrator/flows/runner.py", "_write", "writing held plans (runner._write, 1 per <=25 plans)"),
    ("orchestrator/store/flows.py", "load_steps", "loading every step row (store.flows.load_steps)"),
    ("orchestrator/flows/records.py", "records_of", "rows -> records (records.records_of)"),
    ("orchestrator/flows/runner.py", "step_views", "what code sees as `steps` (runner.step_views)"),
    ("orchestrator/flows/scheduler.py", "plan", "the scheduler (scheduler.plan)"),
    ("orchestrator/flows/runner.py", "_apply", "applying a plan (runner._apply)"),
    ("orchestrator/store/events.py", "append_event", "  of which flow.step.* events (events.append_event)"),
    ("orchestrator/flows/runner.py", "_fence", "fencing each transaction (runner._fence)"),
    ("orchestrator/store/database.py", "transaction", "begin and commit, flush included (Database.transaction)"),
)


def print_tick_parts(profiler: cProfile.Profile, steps: int) -> None:
    """Cumulative seconds of each part of a tick, per step. A transaction's own part is its generator's:
    the begin and the commit, not the statements run inside the `with`."""
    found: dict[str, tuple[int, float]] = {}
    raw: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]  # documented, untyped
    for (path, _, function), (_, calls, _, cumulative, _) in raw.items():
        for suffix, name, label in TICK_PARTS:
            if function == name and path.endswith(suffix):
                count, seconds = found.get(label, (0, 0.0))
                found[label] = (count + calls, seconds + cumulative)
    print("-- where a tick's time goes (cumulative, under cProfile) --")
    for _, _, label in TICK_PARTS:
        count, seconds = found.get(label, (0, 0.0))
        print(f"  {label:58} {seconds:7.2f}s  {seconds / steps * 1000:6.1f} ms/step  {count:6} calls")


def in_process(place: Scratch, shape: str, steps: int, profiler: cProfile.Profile | None) -> tuple[float, int, str]:
    """One flow run ticked in this process after a warm-up run (imports, the sandbox process), so the
    figures are the steady state's; `profiler` (if any) runs only during the measured run."""
    settings = place.settings
    db = services.make_database(settings)
    root = Path(tempfile.mkdtemp(prefix="bench-flow-profile-"))
    handlers, hooks = load_handlers(settings), load_finish_hooks(settings)
    tick_in_process(db, settings, handlers, hooks, create_flow_run(db, "chain", 2, root), 2)
    run_id = create_flow_run(db, shape, steps, root)
    started = time.monotonic()
    if profiler is not None:
        profiler.enable()
    calls, status = tick_in_process(db, settings, handlers, hooks, run_id, steps)
    if profiler is not None:
        profiler.disable()
    seconds = time.monotonic() - started
    db.dispose()
    shutil.rmtree(root, ignore_errors=True)
    return seconds, calls, status


def profile(place: Scratch, shape: str, steps: int, baseline_seconds: float, top: int = 25) -> None:
    """The run's ticks back to back in this process (what a tick that went on, instead of waiting for
    the recovery sweep, would take), timed, then again under cProfile."""
    seconds, calls, status = in_process(place, shape, steps, None)
    print(f"\n== the {shape} of {steps} steps ticked back to back in this process: {seconds:.2f}s ({status}, "
          f"{calls} execute_run calls) = {seconds / steps * 1000:.1f} ms/step, "
          f"{seconds / baseline_seconds:.1f}x the bare tasks ==")
    profiler = cProfile.Profile()
    seconds, calls, status = in_process(place, shape, steps, profiler)
    print(f"under cProfile: {seconds:.2f}s ({status}) = {seconds / steps * 1000:.1f} ms/step")
    print_tick_parts(profiler, steps)
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(top)
        body = out.getvalue()
        print(f"-- top {top} by {order} --")
        print(body[body.index("   ncalls"):].rstrip())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--shape", choices=("chain", "wide", "both"), default="both")
    parser.add_argument("--no-profile", action="store_true", help="skip the in-process cProfile run")
    parser.add_argument("--rounds", type=int, default=3, help="times each side runs each shape (the median counts)")
    options = parser.parse_args()
    shapes = ("chain", "wide") if options.shape == "both" else (options.shape,)
    with scratch() as place:
        measured = shapes if options.no_profile else tuple(dict.fromkeys((*shapes, "chain")))  # the profile's too
        baseline = run_baseline(place, measured, options.steps, options.rounds)
        ours = run_ours(place, shapes, options.steps, options.rounds)
        for shape in shapes:
            report(shape, options.steps, baseline[shape], ours[shape])
        if not options.no_profile:
            profile(place, "chain", options.steps, median_of(baseline["chain"])[0])


if __name__ == "__main__":
    main()
