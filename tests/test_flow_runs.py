"""Flow runs end to end: REST -> a Celery worker process -> flow ticks -> child agent runs -> the fake model.

One stack for the module (database, web server, fake model, worker); each test writes its flows
into the project's `.boocode/flows/`. The kill -9 test replaces the worker; the tests after it use
the replacement.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import stacks
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import Api, WorkerProcess, cli_environment, events_of, first_user_text, run_cli, wait_for

DONE = ("completed", "completed_with_failures", "failed", "cancelled")


class Model:
    """Answers each agent by its prompt; counts the requests per prompt (what a repeat would show)."""

    def __init__(self, fake: FakeModelServer) -> None:
        self.answers: list[tuple[re.Pattern[str], Any]] = []
        self.prompts: list[str] = []
        self.lock = threading.Lock()
        fake.responder = self.respond

    def on(self, pattern: str, answer: Any) -> None:
        self.answers.insert(0, (re.compile(pattern), answer))

    def respond(self, body: dict[str, Any]) -> Reply:
        prompt = first_user_text(body)
        with self.lock:
            self.prompts.append(prompt)
            seen = sum(1 for earlier in self.prompts if earlier == prompt)
        for pattern, answer in self.answers:
            if pattern.search(prompt):
                found = answer(prompt, seen) if callable(answer) else answer
                return found if isinstance(found, Reply) else Reply(text=found, usage=openai_usage(100, 10))
        return Reply(text=f"answer to: {prompt}", usage=openai_usage(100, 10))

    def count(self, pattern: str) -> int:
        with self.lock:
            return sum(1 for prompt in self.prompts if re.search(pattern, prompt))


class Stack:
    def __init__(self, api: Api, settings: Any, db: Any, root: Path, project: dict, model: Model,
                 log_dir: Path) -> None:
        self.api, self.settings, self.db, self.root, self.project, self.model = api, settings, db, root, project, model
        self.log_dir = log_dir
        self.workers: list[WorkerProcess] = []

    def worker(self, name: str) -> WorkerProcess:
        process = WorkerProcess(self.settings, self.log_dir, name=f"{name}-{uuid.uuid4().hex[:4]}@localhost",
                                concurrency=3).start()
        self.workers.append(process)
        return process

    def write_flow(self, file_name: str, body: str) -> None:
        folder = self.root / ".boocode" / "flows"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / file_name).write_text(body)

    def start(self, name: str, flow_input: Any = None, expected: int = 202) -> httpx.Response:
        body = {"input": flow_input} if flow_input is not None else {}
        response = self.api.post(f"/api/projects/{self.project['id']}/flows/{name}/runs", body)
        assert response.status_code == expected, response.text
        return response

    def wait(self, run_id: str, timeout: float = 60) -> dict:
        self.api.wait_for_run(run_id, DONE, timeout=timeout)
        return self.status(run_id)

    def status(self, run_id: str) -> dict:
        return self.api.ok("GET", f"/api/flow-runs/{run_id}")


@pytest.fixture(scope="module")
def stack(admin_postgres_url: str, server_urls: tuple[str, str], scratch_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    fake = FakeModelServer().start()
    with stacks(admin_postgres_url, server_urls, scratch_dir) as make:
        base = make(data_dir=scratch_dir / "flows-data", requeue_after_seconds=3.0, model_base_url=fake.base_url,
                    model_name="gpt-4o-mini", model_api_key="sk-fake")
        root = tmp_path_factory.mktemp("flows") / "root"
        root.mkdir()
        project = base.api.ok("POST", "/api/projects", {"name": "flows", "root_path": str(root)},
                              expected=201)["project"]
        made = Stack(base.api, base.settings, base.db, root, project, Model(fake), tmp_path_factory.mktemp("flow-logs"))
        made.worker("flows")
        yield made
        for process in made.workers:
            process.stop()
    fake.stop()


BRANCHY = """\
name: branchy
description: a code step, a switch, a join after it and a guard
input: {type: object, required: [n], properties: {n: {type: integer}}}
steps:
  - {id: double, kind: code, code: "input.n * 2"}
  - id: route
    kind: switch
    deps: [double]
    cases:
      - {when: "steps.double.result > 10", then: [big]}
    default: [small]
  - {id: big, kind: agent, prompt: "big {{ steps.double.result }}"}
  - {id: small, kind: agent, prompt: "small {{ steps.double.result }}"}
  - id: join
    kind: code
    deps: [big, small]
    code: |
      const picked = steps.big.state === "completed" ? steps.big.result : steps.small.result;
      return {picked, states: [steps.big.state, steps.small.state]};
  - {id: never, kind: code, deps: [join], when: "input.n > 100", code: "'unreachable'"}
output: join
"""


def states(status: dict) -> dict[str, tuple[str, int]]:
    return {step["id"]: (step["state"], step["attempt"]) for step in status["steps"]}


def test_a_switch_a_join_and_code_steps_complete_with_the_right_states(stack: Stack) -> None:
    stack.write_flow("branchy.yaml", BRANCHY)
    refused = stack.start("branchy", {"n": "three"}, expected=422).json()["error"]
    assert refused["details"][0]["path"] == "input/n"
    small_run = stack.start("branchy", {"n": 3}).json()
    big_run = stack.start("branchy", {"n": 8}).json()

    small = stack.wait(small_run["run"]["id"])
    assert small["run"]["status"] == "completed", small
    assert states(small) == {"double": ("completed", 1), "route": ("completed", 1), "big": ("excluded", 0),
                             "small": ("completed", 1), "join": ("completed", 1), "never": ("skipped", 0)}
    assert small["value"] == {"picked": "answer to: small 6", "states": ["excluded", "completed"]}
    by_id = {step["id"]: step for step in small["steps"]}
    assert by_id["route"]["result"] == {"case": None, "branch": ["small"]}
    assert by_id["small"]["tokens"] == 110 and by_id["small"]["child_run_id"]
    assert by_id["big"]["child_run_id"] is None and by_id["join"]["deps"] == ["big", "small"]

    big = stack.wait(big_run["run"]["id"])
    assert big["run"]["status"] == "completed", big
    assert states(big)["big"] == ("completed", 1) and states(big)["small"] == ("excluded", 0)
    assert big["value"]["picked"] == "answer to: big 16"
    assert stack.model.count("^small 6$") == 1 and stack.model.count("^big 16$") == 1

    # each change of a step is on the session's event log, in the order it happened
    events = [event for event in events_of(stack.api, small_run["session"]["id"])
              if event["type"].startswith("flow.step.") and event["run_id"] == small_run["run"]["id"]]
    finished = [(event["data"]["step"], event["data"]["state"]) for event in events
                if event["type"] == "flow.step.finished"]
    assert finished.index(("route", "completed")) < finished.index(("big", "excluded"))
    assert finished.index(("small", "completed")) < finished.index(("join", "completed"))
    assert ("small", "running") in [(event["data"]["step"], event["data"]["state"]) for event in events
                                    if event["type"] == "flow.step.started"]

    # rerun from the join: it runs again, everything upstream is kept as it was
    before = {step["id"]: step for step in small["steps"]}
    stack.api.ok("POST", f"/api/flow-runs/{small_run['run']['id']}/rerun", {"from_step": "join"}, expected=202)
    again = stack.wait(small_run["run"]["id"])
    assert again["run"]["status"] == "completed", again
    after = {step["id"]: step for step in again["steps"]}
    assert after["join"]["attempt"] == 2 and after["join"]["state"] == "completed"
    for kept in ("double", "route", "small"):
        assert after[kept] == before[kept], kept
    assert stack.model.count("^small 6$") == 1
    bad_step = stack.api.post(f"/api/flow-runs/{small_run['run']['id']}/rerun", {"from_step": "nope"})
    assert bad_step.status_code == 422


def test_validation_reports_each_problem_with_its_step_and_line(stack: Stack) -> None:
    broken = """\
name: broken
steps:
  - {id: a, kind: code, code: "1", deps: [ghost]}
  - {id: b, kind: code, code: "2", deps: [c]}
  - {id: c, kind: code, code: "3", deps: [b]}
  - {id: d, kind: switch, cases: [{when: "true", then: [missing]}]}
"""
    found = stack.api.ok("POST", "/api/flows/validate", {"text": broken})
    assert found["valid"] is False
    problems = {(problem["step"], problem["line"]) for problem in found["problems"]}
    assert {("a", 3), ("b", 4), ("d", 6)} <= problems
    messages = " | ".join(problem["message"] for problem in found["problems"])
    assert "ghost" in messages and "cycle: b -> c -> b" in messages and "missing" in messages
    assert stack.api.ok("POST", "/api/flows/validate", {"text": BRANCHY}) == {"valid": True, "name": "branchy",
                                                                            "problems": []}
    assert httpx.post(f"{stack.api.url}/api/flows/validate", json={"text": BRANCHY}).status_code == 401

    # what the tokeniser cannot see is compiled in a sandbox process (nothing of it runs), with its line
    unparsable = """\
name: unparsable
steps:
  - id: fold
    kind: code
    code: |
      const total = input.n;
      return total +* 2;
  - {id: gate, kind: code, deps: [fold], when: "steps.fold.result >", code: "1"}
"""
    found = stack.api.ok("POST", "/api/flows/validate", {"text": unparsable})
    assert found["valid"] is False
    assert [(problem["step"], problem["line"]) for problem in found["problems"]] == [("fold", 7), ("gate", 8)]
    assert "code: Unexpected token '*'" in found["problems"][0]["message"]
    assert found["problems"][1]["message"].startswith("when: ")

    stack.write_flow("broken.yaml", broken)
    listed = stack.api.ok("GET", f"/api/projects/{stack.project['id']}/flows")
    assert {"review-diff", "triage-failing-test", "release-notes"} <= {flow["name"] for flow in listed["flows"]}
    refused = next(item for item in listed["problems"] if item["path"] == ".boocode/flows/broken.yaml")
    assert ("a", 3) in {(problem["step"], problem["line"]) for problem in refused["problems"]}
    assert stack.start("broken", expected=404).json()["error"]["code"] == "not_found"


def test_a_trigger_token_starts_its_flow_and_a_bad_token_or_flow_is_refused(stack: Stack) -> None:
    stack.write_flow("hello.yaml", "name: hello\nsteps:\n  - {id: greet, kind: code, code: \"'hi ' + input.who\"}\n"
                                   "output: greet\n")
    created = stack.api.ok("POST", f"/api/projects/{stack.project['id']}/flows/hello/triggers", expected=201)
    trigger_url = f"{stack.api.url}/api/flows/{created['trigger']['id']}/trigger"
    assert httpx.post(trigger_url, json={"input": {"who": "ci"}}).status_code == 401
    assert httpx.post(trigger_url, json={}, headers={"Authorization": "Bearer bft_wrong"}).status_code == 401
    assert httpx.post(trigger_url, json={}, headers={"Authorization": f"Bearer {stack.api.token}"}).status_code == 401
    unknown = f"{stack.api.url}/api/flows/{uuid.uuid4()}/trigger"
    assert httpx.post(unknown, json={}, headers={"Authorization": f"Bearer {created['token']}"}).status_code == 404
    started = httpx.post(trigger_url, json={"input": {"who": "ci"}},
                         headers={"Authorization": f"Bearer {created['token']}"})
    assert started.status_code == 202, started.text
    status = stack.wait(started.json()["run"]["id"])
    assert (status["run"]["status"], status["value"]) == ("completed", "hi ci")
    assert status["trigger"] == {"type": "trigger", "trigger_id": created["trigger"]["id"]}
    # the plain token is not stored anywhere
    with stack.db.transaction() as session:
        stored = session.execute(text("SELECT token_hash FROM flow_triggers")).scalars().all()
    assert created["token"] not in stored and len(stored) == 1


def test_a_timed_out_attempts_late_result_does_not_overwrite_its_retrys(stack: Stack) -> None:
    release = threading.Event()

    def answer(prompt: str, seen: int) -> Reply:
        if seen == 1:  # the first attempt hangs until the test lets it go, long after its timeout
            return Reply(text="late answer from attempt one", usage=openai_usage(50, 5), hold=release, hold_after=1)
        return Reply(text="answer from attempt two", usage=openai_usage(40, 4))

    stack.model.on("^timed answer$", answer)
    stack.write_flow("timed.yaml", """\
name: timed
steps:
  - id: answer
    kind: agent
    prompt: timed answer
    timeout_seconds: 1
    retries: {max_attempts: 2, backoff_seconds: 0}
output: answer
""")
    run = stack.start("timed").json()["run"]
    status = stack.wait(run["id"])
    assert status["run"]["status"] == "completed", status
    step = status["steps"][0]
    assert (step["state"], step["attempt"], step["result"]) == ("completed", 2, "answer from attempt two")
    first = next(item for item in step["history"] if item["attempt"] == 1)
    assert first["state"] == "timed_out" and first["child_run_id"] != step["child_run_id"]
    assert stack.api.run_status(first["child_run_id"]) == "cancelled"
    release.set()  # attempt one's answer arrives now, after its retry's was recorded
    wait_for(lambda: stack.model.count("^timed answer$") == 2, 10, 0.1, "both attempts to reach the model")
    with stack.db.transaction() as session:
        session.execute(text("SELECT pg_sleep(1)"))
    again = stack.status(run["id"])["steps"][0]
    assert (again["state"], again["attempt"], again["result"]) == ("completed", 2, "answer from attempt two")
    assert stack.status(run["id"])["value"] == "answer from attempt two"


def test_cancel_cancels_unfinished_steps_and_their_child_runs(stack: Stack) -> None:
    hold = threading.Event()
    stack.model.on("^held forever$", lambda prompt, seen: Reply(text="never", hold=hold, hold_after=1))
    stack.write_flow("held.yaml", "name: held\nsteps:\n  - {id: wait, kind: agent, prompt: held forever}\n"
                                  "  - {id: after, kind: code, deps: [wait], code: \"1\"}\n")
    run = stack.start("held").json()["run"]
    wait_for(lambda: stack.status(run["id"])["steps"][0]["state"] == "running", 30, 0.1, "the agent step to start")
    child = stack.status(run["id"])["steps"][0]["child_run_id"]
    stack.api.ok("POST", f"/api/flow-runs/{run['id']}/cancel")
    status = stack.status(run["id"])
    hold.set()
    assert status["run"]["status"] == "cancelled"
    assert states(status) == {"wait": ("cancelled", 1), "after": ("cancelled", 0)}
    assert stack.api.run_status(child) == "cancelled"
    assert stack.api.post(f"/api/flow-runs/{run['id']}/cancel").status_code == 409


def test_kill_9_during_parallel_agent_steps_completes_and_repeats_no_finished_step(stack: Stack) -> None:
    jobs = 8
    stack.model.on("^job", lambda prompt, seen: Reply(text=f"done {prompt}", chunk_delay=0.15,
                                                      usage=openai_usage(20, 5)))
    steps = "".join(f"  - {{id: job{index}, kind: agent, prompt: job {index}, batch: jobs}}\n" for index in range(jobs))
    stack.write_flow("fanout.yaml", f"""\
name: fanout
batches: {{jobs: {{max_concurrent: 4}}}}
steps:
{steps}  - id: fold
    kind: code
    deps: [{", ".join(f"job{index}" for index in range(jobs))}]
    code: "Object.keys(steps).filter(id => id.startsWith('job')).map(id => steps[id].result)"
output: fold
""")
    run = stack.start("fanout").json()["run"]

    def completed() -> dict[str, int]:
        """Model calls so far of each step whose result is recorded: that number must never grow."""
        done = [step["id"] for step in stack.status(run["id"])["steps"] if step["state"] == "completed"]
        return {step_id: stack.model.count(f"^job {step_id[3:]}$") for step_id in done}

    wait_for(lambda: len(completed()) >= 2, 60, 0.05, "two agent steps done")
    recorded = completed()
    assert set(recorded.values()) == {1}
    in_flight = [step["id"] for step in stack.status(run["id"])["steps"] if step["state"] == "running"]
    stack.workers[0].kill()
    assert in_flight, "the kill must come while agent steps run"
    stack.worker("replacement")
    status = stack.wait(run["id"], timeout=120)
    assert status["run"]["status"] == "completed", status
    assert status["value"] == [f"done job {index}" for index in range(jobs)]
    assert all(step["attempt"] == 1 and step["state"] == "completed" for step in status["steps"])
    for step_id, count in recorded.items():  # a step recorded before the kill never reaches the model again
        assert stack.model.count(f"^job {step_id[3:]}$") == count, step_id
    for index in range(jobs):  # at most one repeat: the model call the kill interrupted
        assert 1 <= stack.model.count(f"^job {index}$") <= 2
    with stack.db.transaction() as session:
        children = session.execute(text("SELECT input->'spec'->>'key', count(*) FROM runs WHERE parent_id = :run "
                                        "GROUP BY 1"), {"run": run["id"]}).all()
        finished_events = session.execute(text(
            "SELECT data->>'step', count(*) FROM events WHERE run_id = :run AND type = 'flow.step.finished' "
            "GROUP BY 1"), {"run": run["id"]}).all()
    assert sorted(key for key, _ in children) == sorted(f"job{index}#1" for index in range(jobs))
    assert all(count == 1 for _, count in children)
    assert all(count == 1 for _, count in finished_events) and len(finished_events) == jobs + 1


def test_kill_9_during_a_chain_of_code_steps_loses_only_unwritten_work_and_records_each_step_once(
        stack: Stack) -> None:
    """Code-only plans are written together (runner.BATCH_PLANS): a worker killed with a batch in hand
    loses that batch, which was never recorded, and the next tick runs those steps again."""
    length = 400
    lines = ["name: long-chain", "steps:", "  - {id: s0, kind: code, code: '1'}"]
    lines += [f"  - {{id: s{index}, kind: code, deps: [s{index - 1}], code: 'steps.s{index - 1}.result + 1'}}"
              for index in range(1, length)]
    stack.write_flow("long-chain.yaml", "\n".join(lines + [f"output: s{length - 1}", ""]))
    run = stack.start("long-chain").json()["run"]

    def finished() -> dict[str, str]:
        return {step["id"]: step["finished_at"] for step in stack.status(run["id"])["steps"]
                if step["state"] == "completed"}

    wait_for(lambda: len(finished()) >= 40, 60, 0.02, "some code steps recorded")
    stack.workers[-1].kill()
    before = finished()
    assert stack.status(run["id"])["run"]["status"] == "running" and len(before) < length, \
        "the kill must come while the chain runs"
    stack.worker("after-chain")
    status = stack.wait(run["id"], timeout=120)
    assert status["run"]["status"] == "completed" and status["value"] == length, status["run"]
    assert all(step["state"] == "completed" and step["attempt"] == 1 for step in status["steps"])
    after = {step["id"]: step["finished_at"] for step in status["steps"]}
    assert {step_id: after[step_id] for step_id in before} == before  # what was written stays as it was
    with stack.db.transaction() as session:
        counted = session.execute(text(
            "SELECT type, data->>'step', count(*) FROM events WHERE run_id = :run AND type LIKE 'flow.step.%' "
            "GROUP BY 1, 2"), {"run": run["id"]}).all()
    assert {(kind, count) for kind, _, count in counted} == {("flow.step.started", 1), ("flow.step.finished", 1)}
    assert len(counted) == 2 * length


# Until orchestrator/cli/main.py lists `flows.flow` in COMMANDS, the real `boocode` process is started
# with the group added the way main.py adds every group (cli.add_command), then main() as usual.
FLOW_CLI = ("from orchestrator.cli.flows import flow; from orchestrator.cli.main import cli, main; "
            "cli.commands.get('flow') or cli.add_command(flow); main()")


def flow_cli(stack: Stack, home: Path, *arguments: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    return run_cli("-c", FLOW_CLI, *arguments, environment=cli_environment(stack.api.url, stack.api.token, home),
                   executable=sys.executable, expect=expect)


def test_the_cli_validates_runs_and_waits_reads_and_reruns(stack: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsteps:\n  - {id: a, kind: code, code: \"1\", deps: [ghost]}\n")
    refused = flow_cli(stack, tmp_path, "flow", "validate", str(bad), expect=5)
    assert "line 3 [a]: deps names 'ghost'" in refused.stdout
    good = tmp_path / "good.yaml"
    good.write_text(BRANCHY)
    stack.write_flow("branchy.yaml", BRANCHY)
    assert "flow branchy is valid" in flow_cli(stack, tmp_path, "flow", "validate", str(good)).stdout
    listed = flow_cli(stack, tmp_path, "flow", "list", "--project", stack.project["id"], "--json")
    assert "branchy" in {entry["name"] for entry in json.loads(listed.stdout)["flows"]}

    waited = flow_cli(stack, tmp_path, "flow", "run", "branchy", "--project", stack.project["id"],
                      "--input", '{"n": 2}', "--wait")
    assert "excluded  big (switch 'route' took the default, which does not include it)" in waited.stdout
    run_id = re.search(r"run ([0-9a-f-]{36}) completed", waited.stdout).group(1)
    result = json.loads(flow_cli(stack, tmp_path, "flow", "result", run_id).stdout)
    assert result == {"picked": "answer to: small 4", "states": ["excluded", "completed"]}
    status = json.loads(flow_cli(stack, tmp_path, "flow", "status", run_id, "--json").stdout)
    assert states(status)["never"] == ("skipped", 0)
    rerun = flow_cli(stack, tmp_path, "flow", "rerun", run_id, "--from", "double", "--input", '{"n": 9}', "--wait")
    assert "started   big (attempt 1)" in rerun.stdout and "started   double (attempt 2)" in rerun.stdout
    assert json.loads(flow_cli(stack, tmp_path, "flow", "result", run_id).stdout)["picked"] == "answer to: big 18"
    flow_cli(stack, tmp_path, "flow", "run", "nope", "--project", stack.project["id"], expect=4)
