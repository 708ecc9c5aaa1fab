"""Flow caps, estimates and trigger tokens (issue 18).

The decision "may this dispatch go" (orchestrator/flows/caps.py `check`) and the static part of an
estimate (`outline`) are pure and table-tested here; then, through one real stack for the module
(database, web server, a Celery worker process, the fake model): a capped run starts no agent past
its cap and ends honestly, the estimate route adds up a flow and its history, trigger tokens are
listed and revoked by owners only, and `boocode flow run --dry-run` starts nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from sqlalchemy import text

from orchestrator.flows import caps
from orchestrator.flows.definition import Caps, load
from orchestrator.store import users
from tests.conftest import stacks
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import Api, WorkerProcess, cli_environment, first_user_text, run_cli

DONE = ("completed", "completed_with_failures", "failed", "cancelled")

# --- the pure part ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("limits", "spent", "expected"), [
    (Caps(), caps.Spent(agents=1000, tokens=10**9, cost=99.0), None),
    (Caps(agents=2), caps.Spent(agents=1), None),
    (Caps(agents=2), caps.Spent(agents=2), ("agents", 2, 2)),
    (Caps(agents=2), caps.Spent(agents=3), ("agents", 3, 2)),
    (Caps(tokens=1000), caps.Spent(tokens=999), None),
    (Caps(tokens=1000), caps.Spent(tokens=1000), ("tokens", 1000, 1000)),
    (Caps(cost=0.5), caps.Spent(cost=0.4999), None),
    (Caps(cost=0.5), caps.Spent(cost=0.75), ("cost", 0.75, 0.5)),
    (Caps(agents=2, tokens=10, cost=0.1), caps.Spent(agents=2, tokens=50, cost=1.0), ("agents", 2, 2)),  # agents first
    (Caps(agents=5, tokens=10, cost=0.1), caps.Spent(agents=1, tokens=50, cost=1.0), ("tokens", 50, 10)),
    (Caps(agents=5, tokens=100, cost=0.1), caps.Spent(agents=1, tokens=50, cost=1.0), ("cost", 1.0, 0.1)),
])
def test_check_refuses_a_dispatch_once_a_cap_is_reached(limits: Caps, spent: caps.Spent,
                                                       expected: tuple[str, Any, Any] | None) -> None:
    reached = caps.check(limits, spent)
    assert (None if reached is None else (reached.cap, reached.spent, reached.limit)) == expected


def test_a_cap_reached_is_a_failure_that_names_the_cap_the_figure_and_the_limit_and_is_not_retried() -> None:
    error = caps.CapReached("agents", 2, 2).error()
    assert (error["code"], error["retryable"], error["cap"]) == ("flow_cap", False, "agents")
    assert "agents cap is reached (2 agents started, the cap is 2)" in error["message"]
    assert "caps.agents" in error["message"]
    assert "$0.5000 spent, the cap is $0.2500" in caps.CapReached("cost", 0.5, 0.25).message()
    assert caps.Spent(agents=1, tokens=5).plus_agent() == caps.Spent(agents=2, tokens=5)
    assert not caps.is_capped(Caps()) and caps.is_capped(Caps(cost=1.0))


OUTLINED = """\
name: outlined
caps: {agents: 9}
steps:
  - {id: plan, kind: agent, prompt: p, retries: {max_attempts: 3}}
  - {id: shape, kind: code, code: "1"}
  - id: route
    kind: switch
    deps: [plan]
    cases: [{when: "true", then: [left]}]
    default: [right]
  - {id: left, kind: agent, prompt: l}
  - {id: right, kind: agent, prompt: r, retries: {max_attempts: 2}}
  - {id: inner, kind: flow, flow: helper, retries: {max_attempts: 2}}
  - {id: ghost, kind: flow, flow: nowhere}
"""
HELPER = "name: helper\nsteps:\n  - {id: a, kind: agent, prompt: a}\n  - {id: b, kind: agent, prompt: b}\n"


@pytest.mark.parametrize(("helper", "nested_calls"), [
    (HELPER, 2),                                   # two agent steps, one attempt each
    (HELPER.replace("steps:", "caps: {agents: 1}\nsteps:"), 1),  # bounded by the nested flow's own cap
    (None, None),                                  # not found: not counted
])
def test_outline_counts_every_attempt_every_branch_and_nested_flows(helper: str | None,
                                                                    nested_calls: int | None) -> None:
    shape = caps.outline(load(OUTLINED), {"helper": load(helper) if helper else None, "nowhere": None})
    assert shape["steps"] == {"agent": 3, "code": 1, "switch": 1, "flow": 2}
    assert shape["agent_steps"] == 3
    inner = 2 * nested_calls if nested_calls is not None else None  # the flow step's 2 attempts
    assert shape["nested_flows"] == [
        {"step": "inner", "flow": "helper", "found": helper is not None, "max_agent_calls": inner},
        {"step": "ghost", "flow": "nowhere", "found": False, "max_agent_calls": None}]
    assert shape["max_agent_calls"] == 3 + 1 + 2 + (inner or 0)  # both branches of the switch count
    assert shape["switches"] == [{"step": "route", "branches": [["left"], ["right"]]}]


# --- through the services --------------------------------------------------------------------------


class Model:
    """Counts the requests per prompt; answers each with 100 + 10 tokens."""

    def __init__(self, fake: FakeModelServer) -> None:
        self.prompts: list[str] = []
        self.lock = threading.Lock()
        fake.responder = self.respond

    def respond(self, body: dict[str, Any]) -> Reply:
        prompt = first_user_text(body)
        with self.lock:
            self.prompts.append(prompt)
        return Reply(text=f"answer to: {prompt}", usage=openai_usage(100, 10))

    def count(self, pattern: str) -> int:
        with self.lock:
            return sum(1 for prompt in self.prompts if re.search(pattern, prompt))


class Stack:
    def __init__(self, api: Api, db: Any, root: Path, project: dict, model: Model) -> None:
        self.api, self.db, self.root, self.project, self.model = api, db, root, project, model

    def write_flow(self, file_name: str, body: str) -> None:
        folder = self.root / ".boocode" / "flows"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / file_name).write_text(body)

    def path(self, tail: str) -> str:
        return f"/api/projects/{self.project['id']}/flows/{tail}"

    def run(self, name: str, flow_input: Any = None) -> dict:
        run = self.api.ok("POST", self.path(f"{name}/runs"), {"input": flow_input} if flow_input else {},
                          expected=202)["run"]
        self.api.wait_for_run(run["id"], DONE, timeout=60)
        return self.api.ok("GET", f"/api/flow-runs/{run['id']}")

    def user(self, role: str | None) -> Api:
        with self.db.transaction() as session:
            user = users.create_user(session, f"{role or 'stranger'}-{uuid.uuid4().hex[:6]}")
            _, token = users.create_token(session, user.id, "tests")
        if role is not None:
            self.api.ok("PUT", f"/api/projects/{self.project['id']}/members/{user.id}", {"role": role})
        return self.api.as_user(token)

    def flow_runs(self) -> int:
        with self.db.transaction() as session:
            return int(session.execute(text("SELECT count(*) FROM runs WHERE kind = 'flow'")).scalar_one())


@pytest.fixture(scope="module")
def stack(admin_postgres_url: str, server_urls: tuple[str, str], scratch_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    fake = FakeModelServer().start()
    with stacks(admin_postgres_url, server_urls, scratch_dir) as make:
        base = make(data_dir=scratch_dir / "caps-data", requeue_after_seconds=3.0, model_base_url=fake.base_url,
                    model_name="gpt-4o-mini", model_api_key="sk-fake")
        root = tmp_path_factory.mktemp("caps") / "root"
        root.mkdir()
        project = base.api.ok("POST", "/api/projects", {"name": "caps", "root_path": str(root)},
                              expected=201)["project"]
        worker = WorkerProcess(base.settings, tmp_path_factory.mktemp("caps-logs"),
                               name=f"caps-{uuid.uuid4().hex[:4]}@localhost", concurrency=3).start()
        yield Stack(base.api, base.db, root, project, Model(fake))
        worker.stop()
    fake.stop()


CAPPED = """\
name: capped
description: three agents in a row under an agents cap of 2
caps: {agents: 2}
input: {type: object, properties: {topic: {type: string}}}
steps:
  - {id: one, kind: agent, prompt: "capped one"}
  - {id: two, kind: agent, prompt: "capped two", deps: [one]}
  - {id: three, kind: agent, prompt: "capped three", deps: [two], retries: {max_attempts: 3}}
  - {id: after, kind: code, code: "'never'", deps: [three]}
  - {id: note, kind: code, code: "'noted'", deps: [two]}
"""


def states(report: dict) -> dict[str, tuple[str, int]]:
    return {step["id"]: (step["state"], step["attempt"]) for step in report["steps"]}


def test_an_agents_cap_starts_no_agent_past_it_and_the_run_ends_with_the_step_failed(stack: Stack) -> None:
    stack.write_flow("capped.yaml", CAPPED)
    report = stack.run("capped")
    assert report["run"]["status"] == "completed_with_failures", report
    assert states(report) == {"one": ("completed", 1), "two": ("completed", 1), "three": ("failed", 1),
                              "after": ("upstream_failed", 0), "note": ("completed", 1)}
    three = next(step for step in report["steps"] if step["id"] == "three")
    assert three["error"]["code"] == "flow_cap" and three["error"]["retryable"] is False
    assert "agents cap is reached (2 agents started, the cap is 2)" in three["error"]["message"]
    assert three["child_run_id"] is None  # nothing was started for it, and no retry was (attempt 1 of 3)
    assert (stack.model.count("^capped one$"), stack.model.count("^capped two$"),
            stack.model.count("^capped three$")) == (1, 1, 0)
    assert report["failures"] == [{"step": "three", "state": "failed", "error": three["error"]}]
    with stack.db.transaction() as session:
        children = session.execute(text("SELECT count(*) FROM runs WHERE parent_id = :run"),
                                   {"run": report["run"]["id"]}).scalar_one()
    assert children == 2


def test_a_tokens_cap_counts_what_finished_agents_spent(stack: Stack) -> None:
    stack.write_flow("thrifty.yaml", """\
name: thrifty
caps: {tokens: 100}
steps:
  - {id: first, kind: agent, prompt: "thrifty first"}
  - {id: second, kind: agent, prompt: "thrifty second", deps: [first]}
output: second
""")
    report = stack.run("thrifty")
    assert report["run"]["status"] == "failed" and report["error"]["code"] == "flow_failed"
    second = next(step for step in report["steps"] if step["id"] == "second")
    assert (second["state"], second["error"]["code"], second["error"]["cap"]) == ("failed", "flow_cap", "tokens")
    assert "110 tokens spent, the cap is 100" in second["error"]["message"]
    assert stack.model.count("^thrifty second$") == 0 and report["totals"]["tokens"] == 110


def test_the_agents_a_nested_flow_started_count_toward_its_parents_cap(stack: Stack) -> None:
    stack.write_flow("pair.yaml", "name: pair\nsteps:\n  - {id: a, kind: agent, prompt: \"pair a\"}\n"
                                  "  - {id: b, kind: agent, prompt: \"pair b\"}\n")
    stack.write_flow("outer.yaml", """\
name: outer
caps: {agents: 2}
steps:
  - {id: inner, kind: flow, flow: pair}
  - {id: last, kind: agent, prompt: "outer last", deps: [inner]}
  - {id: note, kind: code, code: "1", deps: [inner]}
""")
    report = stack.run("outer")
    assert states(report) == {"inner": ("completed", 1), "last": ("failed", 1), "note": ("completed", 1)}, \
        [step["error"] for step in report["steps"]]
    last = next(step for step in report["steps"] if step["id"] == "last")
    assert "2 agents started, the cap is 2" in last["error"]["message"]
    assert stack.model.count("^pair [ab]$") == 2 and stack.model.count("^outer last$") == 0
    inner = next(step for step in report["steps"] if step["id"] == "inner")
    assert inner["tokens"] == report["totals"]["tokens"] == 220  # the nested run's totals are its step's


def test_the_estimate_adds_up_the_flow_its_last_runs_and_its_caps(stack: Stack) -> None:
    stack.write_flow("capped.yaml", CAPPED)
    stack.run("capped")  # each run of it spends the same: 2 agents of 110 tokens
    with stack.db.transaction() as session:
        finished = session.execute(text(
            "SELECT count(*) FROM runs WHERE kind = 'flow' AND input->'flow'->>'name' = 'capped' "
            "AND status IN ('completed', 'completed_with_failures')")).scalar_one()
    before = stack.flow_runs()
    guess = stack.api.ok("POST", stack.path("capped/estimate"), {"input": {"topic": "x"}})["estimate"]
    assert stack.flow_runs() == before  # an estimate starts nothing
    assert (guess["flow"], guess["steps"]) == ("capped", {"agent": 3, "code": 2, "switch": 0, "flow": 0})
    assert (guess["agent_steps"], guess["max_agent_calls"]) == (3, 5)  # 1 + 1 + 3 attempts
    assert guess["bounds"] == {"agents": 2, "tokens": None, "cost": None}
    history = guess["history"]
    assert history["runs"] == min(finished, 10) and finished >= 1
    assert (history["agents_avg"], history["tokens_avg"]) == (2.0, 220)
    assert history["cost_max"] >= history["cost_avg"] >= 0
    refused = stack.api.post(stack.path("capped/estimate"), {"input": {"topic": 5}})
    assert refused.status_code == 422 and "input" in refused.json()["error"]["message"]
    assert stack.api.post(stack.path("nope/estimate")).status_code == 404
    viewer = stack.user("viewer")
    assert viewer.post(stack.path("capped/estimate")).status_code == 403


def test_owners_list_and_revoke_trigger_tokens_and_a_revoked_one_starts_nothing(stack: Stack) -> None:
    stack.write_flow("hello.yaml", "name: hello\nsteps:\n  - {id: greet, kind: code, code: \"'hi'\"}\noutput: greet\n")
    kept = stack.api.ok("POST", stack.path("hello/triggers"), expected=201)
    gone = stack.api.ok("POST", stack.path("hello/triggers"), expected=201)
    listed = stack.api.get(stack.path("triggers"))
    assert listed.status_code == 200
    entries = {entry["id"]: entry for entry in listed.json()["triggers"]}
    assert {kept["trigger"]["id"], gone["trigger"]["id"]} <= set(entries)
    me = stack.api.ok("GET", "/api/me")["user"]["id"]
    assert entries[kept["trigger"]["id"]]["flow"] == "hello" and entries[kept["trigger"]["id"]]["created_by"] == me
    digest = hashlib.sha256(kept["token"].encode()).hexdigest()
    assert kept["token"] not in listed.text and digest not in listed.text
    assert set(entries[kept["trigger"]["id"]]) == {"id", "project_id", "flow", "created_by", "created_at", "revoked_at"}
    member, stranger = stack.user("member"), stack.user(None)
    assert member.get(stack.path("triggers")).status_code == 403
    assert member.request("DELETE", f"/api/flow-triggers/{gone['trigger']['id']}").status_code == 403
    assert stranger.get(stack.path("triggers")).status_code == 404
    hidden = stranger.request("DELETE", f"/api/flow-triggers/{gone['trigger']['id']}")
    assert hidden.status_code == 404 and stack.project["id"] not in hidden.text
    revoked = stack.api.ok("DELETE", f"/api/flow-triggers/{gone['trigger']['id']}")["trigger"]
    assert revoked["revoked_at"] is not None
    assert stack.api.request("DELETE", f"/api/flow-triggers/{gone['trigger']['id']}").status_code == 404
    still = stack.api.ok("GET", stack.path("triggers"))["triggers"]
    assert gone["trigger"]["id"] not in {entry["id"] for entry in still}

    def fire(made: dict) -> httpx.Response:
        return httpx.post(f"{stack.api.url}/api/flows/{made['trigger']['id']}/trigger", json={},
                          headers={"Authorization": f"Bearer {made['token']}"})

    before = stack.flow_runs()
    assert fire(gone).status_code == 404
    assert stack.flow_runs() == before
    assert fire(kept).status_code == 202  # the other token still works


def test_the_cli_dry_run_prints_the_estimate_and_starts_nothing_and_manages_triggers(stack: Stack,
                                                                                    tmp_path: Path) -> None:
    stack.write_flow("capped.yaml", CAPPED)
    environment = cli_environment(stack.api.url, str(stack.api.token), tmp_path)
    project = stack.project["id"]
    before = stack.flow_runs()
    shown = run_cli("flow", "run", "capped", "--project", project, "--dry-run", environment=environment).stdout
    assert stack.flow_runs() == before
    assert "capped: three agents in a row under an agents cap of 2" in shown
    assert "steps: 3 agent, 2 code, 0 switch, 0 flow" in shown
    assert "agent calls: at most 5 (3 agent step(s)" in shown
    assert "hard bounds: at most 2 agents" in shown
    as_json = json.loads(run_cli("flow", "run", "capped", "--project", project, "--dry-run", "--json",
                                 environment=environment).stdout)
    assert as_json["bounds"]["agents"] == 2 and stack.flow_runs() == before
    run_cli("flow", "run", "capped", "--project", project, "--dry-run", "--input", '{"topic": 1}',
            environment=environment, expect=5)
    assert stack.flow_runs() == before

    stack.write_flow("hello.yaml", "name: hello\nsteps:\n  - {id: greet, kind: code, code: \"'hi'\"}\noutput: greet\n")
    created = run_cli("flow", "trigger", "create", "hello", "--project", project, environment=environment).stdout
    trigger_id = re.search(r"trigger ([0-9a-f-]{36}) for flow hello", created).group(1)  # type: ignore[union-attr]
    assert re.search(r"^bft_\S+$", created, re.MULTILINE)
    listed = run_cli("flow", "trigger", "list", "--project", project, environment=environment).stdout
    assert trigger_id in listed and "bft_" not in listed
    revoked = run_cli("flow", "trigger", "revoke", trigger_id, environment=environment).stdout
    assert f"trigger {trigger_id} for flow hello is revoked" in revoked
    assert trigger_id not in run_cli("flow", "trigger", "list", "--project", project, environment=environment).stdout
    run_cli("flow", "trigger", "revoke", trigger_id, environment=environment, expect=4)
