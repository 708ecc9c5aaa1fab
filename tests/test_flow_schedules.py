"""Flow schedules: the pure beat plan (table-driven), each overlap policy against real runs in Postgres
on a clock the test sets, and real `celery beat` processes — two at once, then killed with -9 and
restarted — firing a per-second schedule through a real worker, counted from the firing rows and the
runs they started.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import select

from orchestrator.flows import cron
from orchestrator.flows.schedules import beat
from orchestrator.store import subagents, users
from orchestrator.store.models import FlowFiring, FlowSchedule, Run
from tests.conftest import stacks
from tests.support import Api, BeatProcess, WorkerProcess, cli_environment, run_cli, wait_for

T0 = datetime(2026, 1, 1, 10, 0, 0, tzinfo=timezone.utc)
EVERY_10S = "*/10 * * * * *"


# --- the pure plan -----------------------------------------------------------------------------------


def outcomes(plan: cron.BeatPlan) -> list[tuple[int, str, tuple[str, ...]]]:
    return [(firing.at.second, firing.outcome, firing.cancel) for firing in plan.firings]


PLANS = [
    # policy, open runs, buffered, firings since the cursor -> (second, outcome, cancelled), start a buffered one
    ("skip", [], 0, 1, [(10, "started", ())], False),
    ("skip", ["r1"], 0, 2, [(10, "skipped", ()), (20, "skipped", ())], False),
    ("skip", [], 0, 3, [(10, "started", ()), (20, "skipped", ()), (30, "skipped", ())], False),
    ("buffer_one", ["r1"], 0, 2, [(10, "buffered", ()), (20, "skipped", ())], False),
    ("buffer_one", [], 1, 1, [(10, "skipped", ())], True),  # the one buffered goes first
    ("buffer_all", ["r1"], 1, 2, [(10, "buffered", ()), (20, "buffered", ())], False),
    ("buffer_all", [], 2, 0, [], True),
    ("cancel_other", ["r1"], 0, 1, [(10, "started", ("r1",))], False),
    # three catch-up firings in one beat: the first two are superseded, the last cancels r1
    ("cancel_other", ["r1"], 0, 3, [(10, "skipped", ()), (20, "skipped", ()), (30, "started", ("r1",))], False),
    ("buffer_all", [], 0, 0, [], False),
]


@pytest.mark.parametrize(("policy", "open_runs", "buffered", "due", "expected", "start_buffered"), PLANS)
def test_beat_plan(policy: str, open_runs: list[str], buffered: int, due: int, expected: list, start_buffered: bool
                   ) -> None:
    now = T0 + timedelta(seconds=10 * due + 5)
    plan = cron.plan_beat(EVERY_10S, "UTC", policy, 300, T0, now, open_runs, buffered)
    assert outcomes(plan) == expected
    assert plan.start_buffered is start_buffered
    assert plan.cursor == (T0 + timedelta(seconds=10 * due) if due else T0)
    assert plan.next_fire_at == T0 + timedelta(seconds=10 * (due + 1))


def test_firings_older_than_the_window_are_missed_and_the_cursor_passes_them() -> None:
    now = T0 + timedelta(minutes=10, seconds=5)
    plan = cron.plan_beat(EVERY_10S, "UTC", "buffer_all", 60, T0, now, [], 0)
    # 10 min of 10-s firings: the 6 of the last 60 s fire (the first starts, the others buffer), 54 are missed
    assert [firing.outcome for firing in plan.firings] == ["started"] + ["buffered"] * 5
    assert plan.missed == 54 and plan.cursor == T0 + timedelta(minutes=10)
    assert cron.plan_beat(EVERY_10S, "UTC", "skip", 60, plan.cursor, now, [], 0).firings == ()


# --- the shell against Postgres ----------------------------------------------------------------------


class Stack:
    def __init__(self, api: Api, settings: Any, db: Any, root: Path, project: dict, log_dir: Path) -> None:
        self.api, self.settings, self.db, self.root, self.project, self.log_dir = api, settings, db, root, project, \
            log_dir

    def write_flow(self, name: str, body: str) -> None:
        folder = self.root / ".boocode" / "flows"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.yaml").write_text(body)

    def path(self, name: str) -> str:
        return f"/api/projects/{self.project['id']}/flows/{name}/schedule"

    def firings(self, name: str) -> list[FlowFiring]:
        with self.db.transaction() as session:
            found = session.scalars(select(FlowFiring).join(FlowSchedule).where(FlowSchedule.flow_name == name)
                                    .order_by(FlowFiring.fire_at))
            return [firing for firing in found]

    def runs(self, name: str) -> list[Run]:
        with self.db.transaction() as session:
            return list(session.scalars(select(Run).where(Run.kind == "flow", Run.input["flow"]["name"].astext == name,
                                                          Run.input["trigger"]["type"].astext == "schedule")))


@pytest.fixture(scope="module")
def stack(admin_postgres_url: str, server_urls: tuple[str, str], scratch_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # No recovery re-enqueue within a test: the policy test's runs must stay queued (open) until it says.
    with stacks(admin_postgres_url, server_urls, scratch_dir) as make:
        base = make(data_dir=scratch_dir / "schedules-data", requeue_after_seconds=600.0, beat_interval_seconds=0.25,
                    model_base_url="http://127.0.0.1:9/v1", model_name="gpt-4o-mini", model_api_key="sk-fake")
        root = tmp_path_factory.mktemp("schedules") / "root"
        root.mkdir()
        project = base.api.ok("POST", "/api/projects", {"name": "schedules", "root_path": str(root)},
                              expected=201)["project"]
        yield Stack(base.api, base.settings, base.db, root, project, tmp_path_factory.mktemp("schedule-logs"))


def overlap_flow(policy: str) -> str:
    return f"""\
name: ov-{policy.replace('_', '-')}
schedule: {{cron: "{EVERY_10S}", overlap: {policy}, catchup_seconds: 60, input: {{policy: {policy}}}}}
steps:
  - {{id: work, kind: agent, prompt: "scheduled work"}}
"""


# (fire at +10 s, +20 s, +30 s) -> outcomes; then the open run is cancelled and a beat at +31 s runs
EXPECTED = {
    "skip": (["started", "skipped", "skipped"], 1),
    "buffer_one": (["started", "started", "skipped"], 2),  # +20 s was buffered, started once +30 s's run ended
    "buffer_all": (["started", "started", "buffered"], 2),  # +30 s still waits behind +20 s's run
    "cancel_other": (["started", "started", "started"], 3),
}


@pytest.mark.parametrize("policy", list(EXPECTED))
def test_each_overlap_policy_against_open_runs(stack: Stack, policy: str) -> None:
    name = f"ov-{policy.replace('_', '-')}"
    stack.write_flow(name, overlap_flow(policy))
    turned_on = stack.api.ok("PUT", stack.path(name), {"enabled": True})["schedule"]
    start = datetime.fromisoformat(turned_on["last_fired_at"])
    first = cron.next_after(EVERY_10S, "UTC", start)
    assert first is not None
    limits, sent = subagents.Limits(server=8, per_user=4), []

    def beat_at(at: datetime) -> None:
        beat(stack.db, lambda task, run_id: sent.append(run_id), None, limits, now=at)

    for offset in (0, 10, 20):
        beat_at(first + timedelta(seconds=offset, milliseconds=200))
        beat_at(first + timedelta(seconds=offset, milliseconds=400))  # a second beat changes nothing
    open_runs = [run for run in stack.runs(name) if run.status not in ("cancelled", "completed")]
    assert len(open_runs) == 1, [(run.id, run.status) for run in stack.runs(name)]
    stack.api.ok("POST", f"/api/flow-runs/{open_runs[0].id}/cancel")
    beat_at(first + timedelta(seconds=21))
    stack.api.ok("PUT", stack.path(name), {"enabled": False})

    firings = stack.firings(name)
    expected, run_count = EXPECTED[policy]
    assert [firing.outcome for firing in firings] == expected
    assert [firing.fire_at for firing in firings] == [first + timedelta(seconds=10 * index) for index in range(3)]
    runs = stack.runs(name)
    assert len(runs) == run_count == len(set(sent)) == len(sent)
    assert {str(firing.run_id) for firing in firings if firing.run_id} == {str(run.id) for run in runs}
    assert all(run.input["input"] == {"policy": policy} and run.input["trigger"]["schedule_id"] == turned_on["id"]
               for run in runs)
    if policy == "cancel_other":
        assert [firing.cancelled for firing in firings] == [[], [str(firings[0].run_id)], [str(firings[1].run_id)]]
        assert sorted(run.status for run in runs) == ["cancelled"] * 3


def test_turning_on_refuses_a_flow_without_a_schedule_and_checks_roles(stack: Stack) -> None:
    stack.write_flow("plain", "name: plain\nsteps:\n  - {id: a, kind: code, code: '1'}\n")
    refused = stack.api.request("PUT", stack.path("plain"), json={"enabled": True})
    assert refused.status_code == 422 and "declares no schedule" in refused.json()["error"]["message"]
    missing = stack.api.request("PUT", stack.path("nope"), json={"enabled": True})
    assert missing.status_code == 404
    with stack.db.transaction() as session:
        viewer = users.create_user(session, f"viewer-{uuid.uuid4().hex[:6]}")
        _, viewer_token = users.create_token(session, viewer.id, "tests")
        viewer_name = viewer.username
    stack.api.ok("POST", f"/api/projects/{stack.project['id']}/members", {"username": viewer_name, "role": "viewer"})
    as_viewer = stack.api.as_user(viewer_token)
    stack.write_flow("ov-skip", overlap_flow("skip"))
    assert as_viewer.request("PUT", stack.path("ov-skip"), json={"enabled": True}).status_code == 403
    assert as_viewer.get(f"/api/projects/{stack.project['id']}/flow-schedules").status_code == 200


# --- real beat processes -----------------------------------------------------------------------------

PULSE = """\
name: pulse
schedule: {cron: "* * * * * *", overlap: skip, catchup_seconds: 60}
steps:
  - {id: beat, kind: code, code: "'tick'"}
"""


def started_firings(stack: Stack) -> int:
    return sum(1 for firing in stack.firings("pulse") if firing.outcome == "started")


def test_two_beats_then_a_killed_and_restarted_beat_fire_each_second_once(stack: Stack, tmp_path: Path) -> None:
    stack.write_flow("pulse", PULSE)
    environment = cli_environment(stack.api.url, stack.api.token, tmp_path)
    run_cli("flow", "schedule", "pulse", "--project", stack.project["id"], "--on", environment=environment)
    worker = WorkerProcess(stack.settings, stack.log_dir, name=f"sched-{uuid.uuid4().hex[:4]}@localhost").start()
    beats = [BeatProcess(stack.settings, stack.log_dir, name).start() for name in ("one", "two")]
    try:
        wait_for(lambda: started_firings(stack) >= 3 and all(process.log().count("Sending due task") >= 4
                                                             for process in beats), 30, 0.2,
                 "three firings while both beats send")
        for process in beats:
            process.kill()
        down_from = datetime.now(timezone.utc)
        wait_for(lambda: datetime.now(timezone.utc) - down_from > timedelta(seconds=3), 10, 0.1, "3 s without a beat")
        before_restart = len(stack.firings("pulse"))
        beats = [BeatProcess(stack.settings, stack.log_dir, "one").start()]  # the same schedule file as before
        wait_for(lambda: len(stack.firings("pulse")) >= before_restart + 5, 30, 0.2, "firings after the restart")
    finally:
        run_cli("flow", "schedule", "pulse", "--project", stack.project["id"], "--off", environment=environment)
        for process in beats:
            process.stop()
    shown = run_cli("flow", "schedule", "pulse", "--project", stack.project["id"], environment=environment)
    firings = stack.firings("pulse")
    times = [firing.fire_at for firing in firings]
    # every second from the first firing to the last has exactly one firing: the downtime was caught up
    assert times == [times[0] + timedelta(seconds=index) for index in range(len(times))], times
    assert any(down_from < at < down_from + timedelta(seconds=3) for at in times)
    assert {firing.outcome for firing in firings} <= {"started", "skipped"}
    started = [firing for firing in firings if firing.outcome == "started"]
    runs = stack.runs("pulse")
    assert len(runs) == len(started) == len({firing.run_id for firing in started})
    wait_for(lambda: all(run.status == "completed" for run in stack.runs("pulse")), 30, 0.2, "the runs to finish")
    assert "enabled" in shown.stdout and "started" in shown.stdout
    worker.stop()
