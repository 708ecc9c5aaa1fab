"""Workflow runs end to end: REST -> Celery worker processes -> ticks -> child agent runs -> fake model.

The fake model answers by prompt (a `responder`), since a workflow's agents reach it in any order.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import new_session
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import (
    CATALOG_ARGS,
    WORKFLOW_DONE,
    WorkerProcess,
    cli_environment,
    events_of,
    example_for,
    first_user_text,
    run_cli,
    wait_for,
)

HEADER = 'export const meta = {name: "t", description: "a test workflow", phases: ["one", "two"]};\n'


def last_user_text(body: dict[str, Any]) -> str:
    users = [message for message in body["messages"] if message["role"] == "user"]
    content = users[-1]["content"]
    return content if isinstance(content, str) else " ".join(part.get("text", "") for part in content)


class Model:
    """Answers each agent by its prompt: `answers` maps a regex to a text (or a function of the body)."""

    def __init__(self, fake: FakeModelServer) -> None:
        self.fake = fake
        self.answers: list[tuple[re.Pattern[str], Any]] = []
        self.prompts: list[str] = []
        self.lock = threading.Lock()
        fake.responder = self.respond

    def on(self, pattern: str, answer: Any) -> "Model":
        self.answers.insert(0, (re.compile(pattern), answer))
        return self

    def respond(self, body: dict[str, Any]) -> Reply:
        prompt = first_user_text(body)
        with self.lock:
            self.prompts.append(prompt)
        for pattern, answer in self.answers:
            if pattern.search(prompt):
                text = answer(body) if callable(answer) else answer
                return text if isinstance(text, Reply) else Reply(text=text, usage=openai_usage(100, 10))
        return Reply(text=f"answer to: {prompt}", usage=openai_usage(100, 10))

    def count(self, pattern: str) -> int:
        with self.lock:
            return sum(1 for prompt in self.prompts if re.search(pattern, prompt))


class Flow:
    def __init__(self, stack: Any, chat: dict, root: Path, tmp: Path, model: Model) -> None:
        self.stack, self.api, self.chat, self.root, self.tmp, self.model = stack, stack.api, chat, root, tmp, model
        self.workers: list[WorkerProcess] = []

    def worker(self, name: str = "wf", **kwargs: Any) -> WorkerProcess:
        process = WorkerProcess(self.stack.settings, self.tmp, name=f"{name}-{len(self.workers)}@localhost",
                                **kwargs).start()
        self.workers.append(process)
        return process

    def start(self, script: str | None = None, expected: int = 202, **body: Any) -> dict:
        if script is not None:
            body["script"] = HEADER + script
        return self.api.ok("POST", f"/api/sessions/{self.chat['id']}/workflows", body, expected=expected)

    def run(self, script: str, timeout: float = 60, **body: Any) -> dict:
        run = self.start(script, **body)["run"]
        return self.wait(run["id"], timeout)

    def wait(self, run_id: str, timeout: float = 60) -> dict:
        self.api.wait_for_run(run_id, WORKFLOW_DONE, timeout=timeout)
        return self.status(run_id)

    def status(self, run_id: str) -> dict:
        return self.api.ok("GET", f"/api/runs/{run_id}/workflow")


def make_flow(make_stack: Any, fake: FakeModelServer, tmp_path: Path, **settings: Any) -> Flow:
    stack = make_stack(model_base_url=fake.base_url, model_name="gpt-4o-mini", model_api_key="sk-fake",
                       workflow_concurrency=16, **settings)
    root = tmp_path / "root"
    chat = new_session(stack.api, root)
    return Flow(stack, chat, root, tmp_path, Model(fake))


@pytest.fixture
def flow(make_stack, fake: FakeModelServer, tmp_path: Path):  # type: ignore[no-untyped-def]
    flow = make_flow(make_stack, fake, tmp_path)
    yield flow
    for worker in flow.workers:
        worker.stop()


@pytest.fixture
def slow_sweep_flow(make_stack, fake: FakeModelServer, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A stack whose recovery sweep re-enqueues a waiting run only after 20 s (the tests' usual 2 s
    would wake it long before): what wakes a run sooner is its own doing."""
    flow = make_flow(make_stack, fake, tmp_path, lease_seconds=20.0, requeue_after_seconds=60.0)
    yield flow
    for worker in flow.workers:
        worker.stop()


def agents_by_label(status: dict) -> dict[str, dict]:
    return {agent["label"]: agent for agent in status["agents"]}


def test_sequential_agents_and_a_resume_after_an_edit(flow: Flow) -> None:
    flow.worker()
    script = """
phase("one");
const a = await agent("first step", {label: "a"});
const b = await agent("second step after " + a, {label: "b"});
phase("two");
const c = await agent("third step after " + b, {label: "c"});
log("finished with", c);
return {a, b, c};
"""
    status = flow.run(script)
    assert status["run"]["status"] == "completed", status
    assert status["value"] == {"a": "answer to: first step",
                               "b": "answer to: second step after answer to: first step",
                               "c": "answer to: third step after answer to: second step after answer to: first step"}
    agents = agents_by_label(status)
    assert [agents[label]["phase"] for label in "abc"] == ["one", "one", "two"]
    assert all(agent["tokens"] == 110 and not agent["cached"] for agent in agents.values())
    assert [line["text"] for line in status["logs"] if line["level"] == "info"] == [
        f"finished with {status['value']['c']}"]
    assert flow.model.count("^first step$") == 1

    # edit only the second prompt and resume: the first call comes from the journal
    run_id = status["run"]["id"]
    resumed = flow.api.ok("POST", f"/api/runs/{run_id}/resume",
                          {"script": HEADER + script.replace("second step after", "2nd step after")})
    assert resumed["run"]["status"] == "queued"
    status = flow.wait(run_id)
    assert status["run"]["status"] == "completed", status
    assert flow.model.count("^first step$") == 1
    assert flow.model.count("^2nd step after") == 1 and flow.model.count("^third step after answer to: 2nd") == 1
    agents = {agent["key"]: agent for agent in status["agents"]}
    cached = [agent for agent in agents.values() if agent["cached"]]
    assert [agent["label"] for agent in cached] == ["a"] and status["cached"] == 1
    assert status["pass"] == 2
    # the chat transcript holds none of the agents' messages; each agent's own transcript is there
    assert flow.api.ok("GET", f"/api/sessions/{flow.chat['id']}/messages")["messages"] == []
    child = cached[0]["child_run_id"]
    own = flow.api.ok("GET", f"/api/runs/{child}/messages")["messages"]
    assert [message["role"] for message in own] == ["user", "assistant"]


def test_parallel_keeps_order_failures_are_null_and_one_changed_slot_reruns_alone(flow: Flow) -> None:
    flow.worker()
    flow.model.on(r"^item 3$", lambda body: Reply(status=400, error_message="this prompt is not allowed"))
    script = """
const items = args.items;
const results = await parallel(items.map((item) => () => agent("item " + item, {label: "slot " + item})));
const summary = await agent("summarise " + results.map(String).join(" | "), {label: "summary"});
return {results, summary};
"""
    body = {"args": {"items": list(range(10))}}
    status = flow.run(script, **body)
    assert status["run"]["status"] == "completed_with_failures", status
    results = status["value"]["results"]
    assert results == [None if item == 3 else f"answer to: item {item}" for item in range(10)]
    failures = status["failures"]
    assert [(failure["label"], failure["status"]) for failure in failures] == [("slot 3", "failed")]
    assert "not allowed" in failures[0]["reason"]
    assert flow.model.count(r"^item \d$") == 9 + 1  # slot 3's call failed once (a 400 is not retried)

    # change one slot's prompt: only that slot and what follows the fan-out run again
    flow.model.answers.clear()
    run_id = status["run"]["id"]
    edited = script.replace('"item " + item', '(item === 7 ? "item seven" : "item " + item)')
    flow.api.ok("POST", f"/api/runs/{run_id}/resume", {"script": HEADER + edited, **{}})
    status = flow.wait(run_id)
    assert status["run"]["status"] == "completed", status
    assert status["value"]["results"][7] == "answer to: item seven"
    assert status["value"]["results"][3] == "answer to: item 3"  # a failed call runs again on resume
    agents = agents_by_label(status)
    assert sorted(label for label, agent in agents.items() if agent["cached"]) == sorted(
        f"slot {item}" for item in range(10) if item not in (3, 7))
    assert flow.model.count(r"^item \d$") == 11 and flow.model.count("^item seven$") == 1
    assert flow.model.count("^summarise") == 2
    listing = flow.api.ok("GET", f"/api/sessions/{flow.chat['id']}/events?limit=500")["events"]
    events = [event["type"] for event in listing]
    assert events.count("workflow.agent.cached") == 8
    assert "workflow.agent.started" in events and "workflow.agent.finished" in events


def test_pipeline_items_move_through_stages_independently(flow: Flow) -> None:
    flow.worker(concurrency=4)
    gate = threading.Event()
    flow.model.on(r"^draft a$", lambda body: (gate.wait(30), Reply(text="A", usage=openai_usage(10, 1)))[1])
    script = """
const out = await pipeline(["a", "b"],
  (item) => agent("draft " + item, {label: "draft " + item}),
  (draft, item) => agent("polish " + draft, {label: "polish " + item}));
return out;
"""
    run = flow.start(script)["run"]
    # b is polished while a is still being drafted: no barrier between stages
    wait_for(lambda: agents_by_label(flow.status(run["id"])).get("polish b", {}).get("status") == "completed",
             30, 0.2, "polish b to finish while draft a is held")
    assert agents_by_label(flow.status(run["id"]))["draft a"]["status"] == "running"
    gate.set()
    status = flow.wait(run["id"])
    assert status["value"] == ["answer to: polish A", "answer to: polish answer to: draft b"]


def test_schema_answers_are_validated_fed_back_and_retried_then_throw(flow: Flow) -> None:
    flow.worker()
    attempts: dict[str, int] = {}

    def sloppy(body: dict[str, Any]) -> Reply:
        attempts["good"] = attempts.get("good", 0) + 1
        if attempts["good"] == 1:
            return Reply(text="Sure! The count is three.", usage=openai_usage(50, 5))
        assert "does not match the required JSON Schema" in last_user_text(body)
        return Reply(text='```json\n{"count": 3}\n```', usage=openai_usage(50, 5))

    flow.model.on("^count things$", sloppy)
    flow.model.on("^never valid$", lambda body: Reply(text='{"count": "many"}', usage=openai_usage(50, 5)))
    script = """
const schema = {type: "object", required: ["count"], properties: {count: {type: "integer"}}};
const good = await agent("count things", {label: "good", schema});
let message = null;
try { await agent("never valid", {label: "bad", schema}); } catch (error) { message = error.message; }
return {good, message};
"""
    status = flow.run(script)
    assert status["value"]["good"] == {"count": 3}
    assert attempts["good"] == 2
    assert "did not match the schema after 3 tries" in status["value"]["message"]
    assert status["run"]["status"] == "completed_with_failures"
    assert [failure["label"] for failure in status["failures"]] == ["bad"]
    assert flow.model.count("^never valid$") == 3


def test_budget_agent_types_nested_workflows_and_script_errors(flow: Flow) -> None:
    flow.worker()
    (flow.root / ".boocode" / "workflows").mkdir(parents=True)
    (flow.root / ".boocode" / "workflows" / "inner.js").write_text(
        'export const meta = {name: "inner", description: "nested"};\n'
        'const x = await agent("inner " + args.n, {label: "inner"});\n'
        'let nested = "allowed";\ntry { await workflow("inner", {}); } catch (error) { nested = error.message; }\n'
        'return {x, nested, budget: budget.total};\n')
    (flow.root / ".boocode" / "agents").mkdir(parents=True)
    (flow.root / ".boocode" / "agents" / "scout.md").write_text(
        "---\nname: scout\ndescription: reads only\ntools: read_file, glob\n---\nYou are a scout. Report briefly.\n")
    script = """
let unknown = null;
try { await agent("typed", {agentType: "nope"}); } catch (error) { unknown = error.message; }
let isolated = null;
try { await agent("isolated", {isolation: "worktree"}); } catch (error) { isolated = error.message; }
let effort = null;
try { await agent("think oddly", {effort: "extreme"}); } catch (error) { effort = error.message; }
await parallel([1, 2, 3].map((n) => () => agent("spend " + n, {label: "spend " + n})));
let refused = null;
try { await agent("one too many", {label: "over"}); } catch (error) { refused = error.name + ": " + error.message; }
let scouted = null;
try { await workflow("inner", {n: 1}); } catch (error) { scouted = error.name; }
return {spent: budget.spent(), refused, unknown, scouted, isolated, effort};
"""
    status = flow.run(script, caps={"max_tokens": 300})
    value = status["value"]
    assert value["spent"] >= 330  # three in-flight agents finished (110 tokens each) although the budget is 300
    assert value["refused"].startswith("WorkflowBudgetExceededError")
    assert ("unknown agentType 'nope'" in value["unknown"] and "scout" in value["unknown"]
            and "Explore" in value["unknown"])
    assert value["scouted"] == "WorkflowBudgetExceededError"  # the nested workflow shares the budget
    assert "isolation 'worktree' needs a git repository" in value["isolated"]
    assert "is not a git repository" in value["isolated"]
    assert flow.model.count("^one too many$") == 0 and flow.model.count("^typed$") == 0
    assert flow.model.count("^isolated$") == 0
    assert "effort must be one of minimal, low, medium, high" in value["effort"]
    assert flow.model.count("^think oddly$") == 0

    # typed agents get their prompt and only their tools; the nested workflow has its own args, one level only
    typed = """
const a = await agent("scout it", {label: "scout", agentType: "scout"});
const inner = await workflow("inner", {n: 2});
await agent("think hard", {effort: "high"});
return {a, inner};
"""
    status = flow.run(typed)
    assert status["run"]["status"] == "completed", status
    assert status["value"]["inner"] == {"x": "answer to: inner 2",
                                        "nested": "workflow(): workflows nest one level only", "budget": None}
    request = next(entry["body"] for entry in flow.model.fake.requests
                   if entry["body"]["messages"][1]["content"] == "scout it")
    assert "You are a scout" in request["messages"][0]["content"]
    assert sorted(tool["function"]["name"] for tool in request["tools"]) == ["glob", "read_file"]
    assert "reasoning_effort" not in request
    # effort reaches the model as reasoning_effort; an unknown effort throws before any model call
    request = next(entry["body"] for entry in flow.model.fake.requests
                   if entry["body"]["messages"][1]["content"] == "think hard")
    assert request["reasoning_effort"] == "high"

    failing = flow.run('const a = await agent("before the error");\n\nthrow new Error("boom " + a.length);\n')
    assert failing["run"]["status"] == "failed"
    assert failing["error"]["code"] == "script_error" and failing["error"]["line"] == 4
    assert failing["error"]["message"] == "boom 27"

    looping = flow.run('await agent("then loop");\nwhile (true) {}\n')
    assert looping["run"]["status"] == "failed" and looping["error"]["code"] == "script_timeout"
    stalled = flow.run("await new Promise(() => {});\n")
    assert stalled["error"]["code"] == "script_stalled"
    assert flow.workers[0].process.poll() is None  # the worker survived all of it



def test_worktree_isolation_keeps_only_the_worktrees_that_changed_something(flow: Flow) -> None:
    import subprocess

    def git(*arguments: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *arguments],
                              cwd=flow.root, check=True, capture_output=True, text=True).stdout

    flow.root.mkdir(parents=True, exist_ok=True)
    (flow.root / "notes.txt").write_text("original\n")
    git("init", "-q", "-b", "main")
    git("add", "notes.txt")
    git("commit", "-q", "-m", "first")

    def editor(body: dict) -> Reply:
        if body["messages"][-1]["role"] == "tool":
            return Reply(text="edited", usage=openai_usage(100, 10))
        return Reply(tool_calls=[("edit_file", {"path": "notes.txt", "old_text": "original", "new_text": "changed"})],
                     usage=openai_usage(100, 10))

    def reader(body: dict) -> Reply:
        if body["messages"][-1]["role"] == "tool":
            return Reply(text=body["messages"][-1]["content"].strip(), usage=openai_usage(100, 10))
        return Reply(tool_calls=[("read_file", {"path": "notes.txt"})], usage=openai_usage(100, 10))

    flow.model.on("^edit the notes$", editor).on("^read the notes$", reader)
    flow.worker()
    status = flow.run("""
const [edited, read] = await parallel([
  () => agent("edit the notes", {label: "editor", isolation: "worktree"}),
  () => agent("read the notes", {label: "reader", isolation: "worktree"}),
]);
return {edited, read};
""")
    assert status["run"]["status"] == "completed", status
    assert status["value"]["edited"] == "edited" and status["value"]["read"].endswith("original")
    agents = agents_by_label(status)
    kept, dropped = agents["editor"]["worktree"], agents["reader"]["worktree"]
    assert kept["kept"] is True and kept["changed"] == ["notes.txt"]
    assert Path(kept["path"]).parent == flow.root / ".boocode" / "worktrees"
    assert (Path(kept["path"]) / "notes.txt").read_text() == "changed\n"  # the edit happened in the worktree...
    assert (flow.root / "notes.txt").read_text() == "original\n"  # ...and not in the project
    assert dropped == {"kept": False, "branch": dropped["branch"]}
    branches = git("for-each-ref", "--format=%(refname:short)", "refs/heads/boocode/").split()
    assert branches == [kept["branch"]]
    listed = git("worktree", "list", "--porcelain")
    assert listed.count("worktree ") == 2 and kept["path"] in listed
    assert git("status", "--porcelain") == ""  # the worktrees folder ignores itself
    # each agent was told its own root
    request = next(entry["body"] for entry in flow.model.fake.requests
                   if entry["body"]["messages"][1]["content"] == "edit the notes")
    assert kept["path"] in request["messages"][0]["content"]
    printed = run_cli("workflow", "status", status["run"]["id"],
                      environment=cli_environment(flow.api.url, flow.api.token, flow.tmp)).stdout
    assert f"worktree kept: {kept['path']} (branch {kept['branch']}, 1 changed path(s))" in printed

def test_many_agents_making_and_dropping_worktrees_at_once_never_trip_over_each_other(tmp_path: Path) -> None:
    """Eight agents' worktrees made and released at the same moment in one project, by real git in the
    sandbox, three times over. Unserialised, `worktree prune` read an entry another was adding
    ("failed to read .git/worktrees/<id>/commondir") and `.git/config` writes met each other's lock."""
    import subprocess
    import uuid

    from orchestrator.agent import worktree
    from orchestrator.sandbox import Sandbox

    root = tmp_path / "repo"
    root.mkdir()
    (root / "f.txt").write_text("x\n")
    for arguments in (["init", "-q", "-b", "main"], ["add", "f.txt"], ["commit", "-q", "-m", "first"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *arguments], cwd=root,
                       check=True, capture_output=True)
    errors: list[str] = []

    def one() -> None:
        run_id = str(uuid.uuid4())
        try:
            made = worktree.ensure(root, run_id, Sandbox())
            assert (made.path / "f.txt").read_text() == "x\n"
            assert worktree.release(root, run_id, Sandbox())["kept"] is False
        except Exception as error:  # collected: an assertion in a thread would be lost
            errors.append(f"{type(error).__name__}: {error}")

    for _ in range(3):
        threads = [threading.Thread(target=one) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    listed = subprocess.run(["git", "worktree", "list", "--porcelain"], cwd=root, check=True, capture_output=True,
                            text=True).stdout
    assert listed.count("worktree ") == 1  # only the project's own


def test_cancel_stops_dispatching_and_cancels_agents_in_flight(flow: Flow) -> None:
    flow.worker(concurrency=4)
    hold = threading.Event()
    flow.model.on("^slow", lambda body: (hold.wait(30), Reply(text="late", usage=openai_usage(1, 1)))[1])
    run = flow.start("""
await parallel([1, 2, 3, 4, 5, 6].map((n) => () => agent("slow " + n, {label: "slow " + n})));
return await agent("after");
""", caps={"concurrency": 2})["run"]
    wait_for(lambda: flow.status(run["id"])["counts"].get("running") == 2, 30, 0.2, "two agents in flight")
    # the four without a slot wait as queued calls, in the order the script made them
    assert flow.status(run["id"])["counts"] == {"running": 2, "queued": 4}
    flow.api.ok("POST", f"/api/runs/{run['id']}/cancel")
    hold.set()
    status = flow.wait(run["id"])
    assert status["run"]["status"] == "cancelled"
    started = [agent for agent in status["agents"] if agent["child_run_id"]]
    children = [flow.api.ok("GET", f"/api/runs/{agent['child_run_id']}")["run"] for agent in started]
    assert [child["status"] for child in children] == ["cancelled", "cancelled"]
    assert [agent["status"] for agent in status["agents"]] == ["cancelled"] * 6
    assert [agent["label"] for agent in status["agents"] if not agent["child_run_id"]] == \
        ["slow 3", "slow 4", "slow 5", "slow 6"]
    time.sleep(1)  # nothing queued starts after the cancel
    assert flow.model.count("^slow [3-6]$") == 0 and flow.model.count("^after$") == 0

    # a resume runs the six again: two start, the other four wait queued in place (no replay each)
    seen = len(events_of(flow.api, flow.chat["id"]))
    flow.api.ok("POST", f"/api/runs/{run['id']}/resume")
    status = flow.wait(run["id"])
    assert status["run"]["status"] == "completed" and status["value"] == "answer to: after"
    # attempts count starts: the two cancelled in flight ran twice, the four queued ones once
    assert [agent["attempts"] for agent in status["agents"] if agent["label"]] == [2, 2, 1, 1, 1, 1]
    queued = [event["data"]["count"] for event in events_of(flow.api, flow.chat["id"])[seen:]
              if event["type"] == "workflow.agents.queued"]
    assert queued == [4], queued


def slow(seconds: float, text: str) -> Any:
    return lambda body: (time.sleep(seconds), Reply(text=text, usage=openai_usage(10, 2)))[1]


def test_agents_beyond_the_concurrency_wait_queued_and_start_in_order_without_a_replay_each(flow: Flow) -> None:
    flow.worker(concurrency=2)
    flow.model.on("^job", lambda body: Reply(text=f"did {first_user_text(body)}", chunk_delay=0.02,
                                             usage=openai_usage(10, 2)))
    run = flow.start("""
const out = await parallel(Array.from({length: 12}, (_, i) => () => agent("job " + i, {label: "job " + i})));
return out;
""", caps={"concurrency": 2})["run"]
    status = flow.wait(run["id"])
    assert status["run"]["status"] == "completed", (status["error"], status["failures"])
    assert status["value"] == [f"did job {index}" for index in range(12)]
    agents = agents_by_label(status)
    assert all(agent["attempts"] == 1 and agent["child_run_id"] for agent in agents.values())
    assert len({agent["child_run_id"] for agent in agents.values()}) == 12
    starts = [agents[f"job {index}"]["started_at"] for index in range(12)]
    assert starts == sorted(starts)  # taken from the queue in the order the script asked
    # the first replay queued 10; later ticks only started them, replaying when the queue ran dry
    queued = [event["data"] for event in events_of(flow.api, flow.chat["id"])
              if event["type"] == "workflow.agents.queued"]
    assert queued[0]["count"] == 10 and queued[0]["keys"][0] == agents["job 2"]["key"]
    assert 2 <= status["replays"] < status["ticks"] - 2, (status["replays"], status["ticks"])


def test_a_long_queue_still_replays_and_calls_the_script_no_longer_makes_are_dropped(flow: Flow) -> None:
    """The script's course depends on which of two agents answers first *in the order it made them*.
    The first replay sees only the later call's answer and queues six follow-ups; the replay after
    the earlier call's answer takes the other branch. Between replays the queue keeps the slots
    busy (follow-up 2 starts without one); a replay still comes within REPLAY_EVERY, long before the
    queue runs dry, and drops the follow-ups the script no longer asks for."""
    flow.worker(concurrency=2)
    flow.model.on("^slow one", slow(1.5, "slow")).on("^fast one", slow(0.1, "fast"))
    flow.model.on("^fast follow", slow(3.0, "followed")).on("^slow follow", "slow done")
    run = flow.start("""
let chosen = null;
const earlier = agent("slow one").then(() => { chosen = chosen ?? "slow"; });
const later = agent("fast one").then(() => { chosen = chosen ?? "fast"; });
await Promise.race([earlier, later]);
if (chosen === "fast") {
  await parallel([1, 2, 3, 4, 5, 6].map((n) => () => agent("fast follow " + n, {label: "fast " + n})));
  return "fast";
}
return await agent("slow follow", {label: "slow follow"});
""", caps={"concurrency": 2})["run"]
    status = flow.wait(run["id"])
    assert status["run"]["status"] == "completed", (status["error"], status["failures"])
    assert status["value"] == "slow done"
    labels = {agent["label"] for agent in status["agents"]}
    assert {"fast 1", "fast 2", "slow follow"} <= labels  # started from the queue before the course changed
    assert not labels & {"fast 3", "fast 4", "fast 5", "fast 6"}  # dropped by the next replay
    assert flow.model.count("^fast follow [3-6]$") == 0


def test_a_workflow_that_fails_with_agents_still_queued_ends_them_cancelled_unstarted(slow_sweep_flow: Flow) -> None:
    flow = slow_sweep_flow
    flow.worker(concurrency=2)
    hold = threading.Event()
    flow.model.on("^q 1$", slow(0.1, "one"))
    flow.model.on("^q 2$", lambda body: (hold.wait(60), Reply(text="two", usage=openai_usage(1, 1)))[1])
    # q 2 starts from the queue once q 1 answered, without a replay; a replay still comes about 2 s
    # later although no child finishes (the tick's wake_at), sees q 1's answer and the script throws,
    # while q 3 still waits for q 2's slot
    run = flow.start("""
const calls = [1, 2, 3].map((n) => agent("q " + n, {label: "q " + n}));
await calls[0];
throw new Error("stop here");
""", caps={"concurrency": 1})["run"]
    try:
        status = flow.wait(run["id"], timeout=12)
    finally:
        hold.set()
    assert status["run"]["status"] == "failed" and "stop here" in status["error"]["message"]
    agents = agents_by_label(status)
    assert agents["q 2"]["status"] == "cancelled" and agents["q 2"]["child_run_id"]  # started, never awaited
    assert agents["q 3"]["status"] == "cancelled" and agents["q 3"]["child_run_id"] is None
    assert "before this agent started" in agents["q 3"]["error"]["message"]
    assert flow.model.count("^q 3$") == 0


def schema_responder(body: dict[str, Any]) -> Reply:
    system = body["messages"][0]["content"]
    marker = "validates against this JSON Schema:\n"
    if marker in system:
        schema = json.loads(system.split(marker, 1)[1])
        return Reply(text=json.dumps(example_for(schema)), usage=openai_usage(200, 20))
    return Reply(text=f"notes on: {first_user_text(body)[:40]}", usage=openai_usage(200, 20))


def test_the_catalog_lists_and_every_builtin_runs_end_to_end(flow: Flow) -> None:
    flow.worker(concurrency=4)
    flow.model.fake.responder = schema_responder
    workflows_dir = flow.root / ".boocode" / "workflows"
    workflows_dir.mkdir(parents=True)
    (workflows_dir / "mine.js").write_text(
        'export const meta = {name: "review-code", description: "ours"};\nreturn 1;\n')
    (workflows_dir / "broken.js").write_text('export const meta = {name: "b", description: x};\n')
    personal = flow.stack.settings.data_dir / "workflows"
    personal.mkdir(parents=True, exist_ok=True)
    (personal / "p.js").write_text('export const meta = {name: "personal-one", description: "mine"};\nreturn 2;\n')
    listed = flow.api.ok("GET", f"/api/projects/{flow.chat['project_id']}/workflows")
    by_name = {entry["name"]: entry for entry in listed["workflows"]}
    assert set(CATALOG_ARGS) <= set(by_name)
    assert by_name["review-code"]["source"] == "project" and by_name["review-code"]["description"] == "ours"
    assert by_name["personal-one"]["source"] == "personal"
    assert by_name["deep-research"]["source"] == "builtin" and by_name["deep-research"]["phases"]
    assert ([(problem["path"], problem["line"]) for problem in listed["problems"]]
            == [(".boocode/workflows/broken.js", 1)])
    (workflows_dir / "mine.js").unlink()

    dry = flow.api.ok("POST", f"/api/sessions/{flow.chat['id']}/workflows",
                      {"name": "bounty-hunt", "args": {"hunters": 3}, "dry_run": True})["dry_run"]
    assert dry["phases"] == ["hunt", "judge", "rank"] and len(dry["first_wave"]) == 3

    runs = {name: flow.start(name=name, args=args)["run"]["id"] for name, args in CATALOG_ARGS.items()}
    for name, run_id in runs.items():
        status = flow.wait(run_id, timeout=120)
        assert status["run"]["status"] == "completed", (name, status["error"], status["failures"])
        assert status["value"] is not None and len(status["agents"]) >= 2, name
        assert all(agent["status"] == "completed" for agent in status["agents"]), name
    research = flow.status(runs["deep-research"])["value"]
    assert research["subQuestions"] == ["src/app.py", "src/app.py"] and research["report"].startswith("notes on")
    assert flow.status(runs["bounty-hunt"])["value"]["claims"] == 4


def test_kill_9_of_workers_during_a_50_agent_parallel_loses_nothing_and_repeats_nothing(flow: Flow) -> None:
    flow.model.on("^job", lambda body: Reply(text=f"done {first_user_text(body)}", chunk_delay=0.03,
                                             usage=openai_usage(20, 5)))
    first, second = flow.worker("victim", concurrency=3), flow.worker("steady", concurrency=3)
    run = flow.start("""
const out = await parallel(Array.from({length: 50}, (_, i) => () => agent("job " + i, {label: "job " + i})));
return out;
""", caps={"concurrency": 6})["run"]
    wait_for(lambda: flow.status(run["id"])["counts"].get("completed", 0) >= 12, 60, 0.1, "a dozen agents done")

    def calls_of_recorded() -> dict[str, int]:
        """Model calls so far of each agent whose result is recorded: that number must never grow."""
        done = [agent["label"] for agent in flow.status(run["id"])["agents"] if agent["status"] == "completed"]
        return {label: flow.model.count(f"^{label}$") for label in done}

    before_any_kill = calls_of_recorded()
    assert set(before_any_kill.values()) == {1}  # nothing is repeated while no worker dies
    first.kill()
    wait_for(lambda: flow.status(run["id"])["counts"].get("completed", 0) >= 30, 60, 0.1, "progress after the kill")
    recorded = {**calls_of_recorded(), **before_any_kill}
    second.kill()
    flow.worker("replacement", concurrency=3)
    status = flow.wait(run["id"], timeout=120)
    assert status["run"]["status"] == "completed", (status["error"], status["failures"])
    assert status["value"] == [f"done job {index}" for index in range(50)]
    assert len(status["agents"]) == 50 and all(agent["attempts"] == 1 for agent in status["agents"])
    assert len({agent["child_run_id"] for agent in status["agents"]}) == 50
    for label, count in recorded.items():  # a result recorded before a kill is never produced again
        assert flow.model.count(f"^{label}$") == count, label
    for index in range(50):  # at most one repeat per kill: the model call that kill interrupted
        assert 1 <= flow.model.count(f"^job {index}$") <= 3
    with flow.stack.db.transaction() as session:
        from sqlalchemy import text

        duplicates = session.execute(text(
            "SELECT count(*) FROM runs WHERE parent_id = :run GROUP BY input->'spec'->>'key' HAVING count(*) > 1"),
            {"run": run["id"]}).all()
        assert duplicates == []


def test_cli_run_edit_restart_everything_and_resume_serves_the_unchanged_call(flow: Flow, tmp_path: Path) -> None:
    import subprocess

    from tests.support import LiveServer
    from web.app import create_app

    worker = flow.worker()
    script = tmp_path / "three.js"
    script.write_text(HEADER + 'const a = await agent("alpha", {label: "a", phase: "one"});\n'
                      'const b = await agent("beta " + a, {label: "b", phase: "one"});\n'
                      'const c = await agent("gamma " + b, {label: "c", phase: "two"});\n'
                      'log("done");\nreturn [a, b, c];\n')

    def cli(url: str, *arguments: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        return run_cli(*arguments, environment=cli_environment(url, flow.api.token, tmp_path), expect=expect)

    url = flow.api.url
    listed = cli(url, "workflow", "list", "--project", flow.chat["project_id"])
    assert "deep-research" in listed.stdout and "builtin" in listed.stdout
    dry = cli(url, "workflow", "run", "--file", str(script), "--session", flow.chat["id"], "--dry-run")
    assert "phases: one, two" in dry.stdout and "before the first await: 1" in dry.stdout
    assert "no finished run of this workflow" in dry.stdout and "at most 1000 agents (no token cap" in dry.stdout
    bad = tmp_path / "bad.js"
    bad.write_text(HEADER + "\nconst x = ;\n")
    refused = cli(url, "workflow", "run", "--file", str(bad), "--session", flow.chat["id"], expect=5)
    assert "line 3" in refused.stderr or "line 3" in refused.stdout

    first = cli(url, "workflow", "run", "--file", str(script), "--project", flow.chat["project_id"], "--wait", "--json")
    report = json.loads(first.stdout)
    run_id = report["run"]["id"]
    assert report["run"]["status"] == "completed" and report["cached"] == 0
    # the next launch's estimate comes from what this one spent
    dry = cli(url, "workflow", "run", "--file", str(script), "--session", flow.chat["id"], "--dry-run",
              "--max-tokens", "5000")
    assert "the last 1 finished run(s) here: 3.0 agents, 330 tokens" in dry.stdout
    assert "at most 1000 agents, 5000 tokens" in dry.stdout

    # stop the worker and the web server, edit the second prompt, start new ones, resume from the CLI
    worker.stop()
    flow.stack.server.stop()
    script.write_text(script.read_text().replace('"beta "', '"BETA "'))
    server = LiveServer(create_app(flow.stack.settings)).start()
    flow.stack.server = server
    flow.worker("after-restart")
    resumed = cli(server.url, "workflow", "resume", run_id, "--file", str(script), "--wait")
    assert "cached   [one] a" in resumed.stdout and "started  [one] b" in resumed.stdout
    assert "completed" in resumed.stdout
    status = cli(server.url, "workflow", "status", run_id)
    assert "cached this pass 1" in status.stdout and " cached" in status.stdout.split("\none\n", 1)[1]
    result = json.loads(cli(server.url, "workflow", "result", run_id).stdout)
    assert result == ["answer to: alpha", "answer to: BETA answer to: alpha",
                      "answer to: gamma answer to: BETA answer to: alpha"]
    assert flow.model.count("^alpha$") == 1 and flow.model.count("^BETA") == 1 and flow.model.count("^beta") == 1


def test_cli_wait_says_when_an_agent_needs_an_approval(flow: Flow, tmp_path: Path) -> None:
    import subprocess

    from tests.support import BOOCODE

    def asks(body: dict) -> Reply:
        if body["messages"][-1]["role"] == "tool":
            return Reply(text="ran it", usage=openai_usage(10, 2))
        return Reply(tool_calls=[("run_command", {"argv": ["echo", "hi"]})], usage=openai_usage(10, 2))

    flow.model.on("^check it$", asks)
    flow.worker()
    script = tmp_path / "ask.js"
    script.write_text(HEADER + 'return await agent("check it", {label: "checker"});\n')
    waiting = subprocess.Popen([BOOCODE, "workflow", "run", "--file", str(script), "--session", flow.chat["id"],
                                "--wait"], env=cli_environment(flow.api.url, flow.api.token, tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        while "approval needed" not in line:
            line = waiting.stdout.readline()
            assert line, "the CLI ended without saying an approval was needed"
        assert "run_command" in line and "boocode approval approve" in line
        approval_id = line.split("boocode approval approve ", 1)[1].split()[0]
        flow.api.ok("POST", f"/api/approvals/{approval_id}/decision", {"decision": "approve"})
        rest = waiting.communicate(timeout=60)[0]
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0 and "completed" in rest


# ---- the sandbox: scripts run out of process, and nothing of the host is in their reach

BOMB = "const hoard = new Array(2 ** 28).fill(1.5);\nreturn hoard.length;\n"


def test_an_allocation_bomb_at_launch_leaves_the_web_process_alive_and_answering(flow: Flow) -> None:
    import httpx
    import psutil

    from tests.support import Api, WebProcess, collect_frames

    flow.worker()  # /health reports a worker
    web = WebProcess(flow.stack.settings, flow.tmp).start()
    try:
        api = Api(web.url, flow.api.token)
        pid = web.process.pid  # type: ignore[union-attr]
        gunicorn_workers = {child.pid for child in psutil.Process(pid).children()}
        other = new_session(api, flow.tmp / "other-root")
        socket = api.websocket(other["id"])
        try:
            seen = collect_frames(socket, 1)[-1]["seq"]  # the socket is open and streaming (session.created)
            refused = api.post(f"/api/sessions/{flow.chat['id']}/workflows", {"script": HEADER + BOMB})
            assert refused.status_code == 422, refused.text
            details = refused.json()["error"]["details"]
            assert details["code"] == "script_crashed" and details["signal"] == "SIGTRAP"
            assert "out of memory" in refused.json()["error"]["message"].lower()
            # the same gunicorn processes answer, and the open socket still streams what comes next
            assert web.process.poll() is None and httpx.get(f"{web.url}/health", timeout=10).status_code == 200  # type: ignore[union-attr]
            # the gunicorn worker that ran the check is still the same process (no restart by the arbiter)
            assert {child.pid for child in psutil.Process(pid).children()} == gunicorn_workers
            posted = api.ok("POST", f"/api/sessions/{other['id']}/messages", {"text": "still there?"}, expected=202)
            frame = collect_frames(socket, 1, timeout=30)[0]
            assert frame["seq"] > seen and frame["session_id"] == other["id"], frame
            assert frame["run_id"] == posted["run"]["id"] or frame["type"].startswith("message."), frame
        finally:
            socket.close()
        ok = api.post(f"/api/sessions/{flow.chat['id']}/workflows", {"script": HEADER + "return 1;", "dry_run": True})
        assert ok.status_code == 200, ok.text
    finally:
        web.stop()


def test_an_allocation_bomb_after_an_await_fails_the_run_and_the_worker_serves_the_next(flow: Flow) -> None:
    import psutil

    worker = flow.worker(concurrency=1)
    pool_children = {child.pid for child in psutil.Process(worker.process.pid).children()}  # type: ignore[union-attr]
    status = flow.run('const a = await agent("first");\n' + BOMB, timeout=90)
    assert status["run"]["status"] == "failed", status
    assert status["error"]["code"] == "script_crashed" and status["error"]["signal"] == "SIGTRAP"
    assert "out of memory" in status["error"]["message"].lower()
    after = flow.run('return await agent("next");\n')
    assert after["run"]["status"] == "completed" and after["value"] == "answer to: next"
    assert worker.process.poll() is None  # type: ignore[union-attr]
    # the Celery pool process that ran both ticks is the one it had (the crash was its sandbox's)
    assert pool_children <= {child.pid for child in psutil.Process(worker.process.pid).children()}  # type: ignore[union-attr]
    assert "worker_crashed" not in json.dumps(status)


def test_the_budget_and_the_failures_cannot_be_changed_from_the_script(flow: Flow) -> None:
    flow.worker()
    flow.model.on(r"^doomed$", lambda body: Reply(status=400, error_message="this prompt is not allowed"))
    status = flow.run("""
const names = Object.getOwnPropertyNames(globalThis).filter((name) => /host|boocode/i.test(name));
for (const attack of [() => { budget.total = null; },
                      () => Object.defineProperty(budget, "remaining", {value: () => 1e9}),
                      () => { globalThis.budget = {total: null}; }]) {
  try { attack(); } catch (error) {}
}
await parallel([() => agent("doomed", {label: "doomed"}), () => agent("spend", {label: "spend"})]);
let refused = null;
try { await agent("over the cap", {label: "over"}); } catch (error) { refused = error.name; }
return {names, total: budget.total, refused};
""", caps={"max_tokens": 100})
    assert status["value"] == {"names": [], "total": 100, "refused": "WorkflowBudgetExceededError"}
    assert status["run"]["status"] == "completed_with_failures"
    assert [failure["label"] for failure in status["failures"]] == ["doomed"]
    assert flow.model.count("^over the cap$") == 0


def test_grandchildren_strict_results_and_omitted_args(flow: Flow) -> None:
    flow.worker()
    (flow.root / ".boocode" / "workflows").mkdir(parents=True)
    (flow.root / ".boocode" / "workflows" / "child.js").write_text(
        'export const meta = {name: "child", description: "tries to nest"};\n'
        'await null;\nawait agent("child step");\nfor (let i = 0; i < 5; i++) await null;\n'
        'return await globalThis.workflow("grandchild");\n')
    (flow.root / ".boocode" / "workflows" / "grandchild.js").write_text(
        'export const meta = {name: "grandchild", description: "must not run"};\n'
        'return await agent("grandchild ran");\n')
    nested = flow.run('let message = null;\n'
                      'try { await workflow("child"); } catch (error) { message = error.message; }\n'
                      'return {message, args: typeof args};\n')
    assert nested["run"]["status"] == "completed", nested
    assert nested["value"] == {"message": "workflow(): workflows nest one level only", "args": "undefined"}
    assert flow.model.count("^grandchild ran$") == 0 and flow.model.count("^child step$") == 1

    cyclic = flow.run('const a = {b: {}};\na.b.again = a;\nawait agent("before");\nreturn a;\n')
    assert cyclic["run"]["status"] == "failed"
    assert cyclic["error"]["code"] == "result_not_serialisable" and "result.b.again" in cyclic["error"]["message"]
    refused = flow.api.post(f"/api/sessions/{flow.chat['id']}/workflows", {"script": HEADER + "return 3n;\n"})
    assert refused.status_code == 422 and refused.json()["error"]["details"]["code"] == "result_not_serialisable"
    big = flow.run('await agent("count");\nreturn {counts: [1, 2, 3n]};\n')
    assert big["error"]["code"] == "result_not_serialisable" and "result.counts[2]: a BigInt" in big["error"]["message"]
    given = flow.run("return typeof args;\n", args={"x": 1})
    assert given["value"] == "object"


def test_an_eager_agent_still_running_at_the_end_is_reported_as_it_ended(flow: Flow) -> None:
    flow.worker(concurrency=2)
    hold = threading.Event()
    flow.model.on("^slow eager$", lambda body: (hold.wait(30), Reply(text="late", usage=openai_usage(1, 1)))[1])
    try:
        status = flow.run('const eager = agent("slow eager", {label: "eager"});\n'
                          'const quick = await agent("quick", {label: "quick"});\nreturn quick;\n')
    finally:
        hold.set()
    agents = agents_by_label(status)
    assert agents["quick"]["status"] == "completed"
    assert agents["eager"]["status"] == "cancelled", agents["eager"]
    assert status["counts"].get("running") is None


def test_a_workflow_declares_its_args_and_bad_args_are_refused_before_launch(flow: Flow) -> None:
    folder = flow.root / ".boocode" / "workflows"
    folder.mkdir(parents=True)
    (folder / "typed.js").write_text(
        'export const meta = {name: "typed", description: "takes files",\n'
        '  args: {type: "object", required: ["files"], '
        'properties: {files: {type: "array", items: {type: "string"}}}},\n'
        '  example: {files: ["src/app.py"]}};\nreturn args.files.length;\n')
    listed = {item["name"]: item for item in flow.api.ok(
        "GET", f"/api/projects/{flow.chat['project_id']}/workflows")["workflows"]}
    assert listed["typed"]["args"]["required"] == ["files"] and listed["typed"]["example"] == {"files": ["src/app.py"]}
    missing = flow.api.post(f"/api/sessions/{flow.chat['id']}/workflows", {"name": "typed"})
    assert missing.status_code == 422 and "meta.args" in missing.json()["error"]["message"]
    wrong = flow.api.post(f"/api/sessions/{flow.chat['id']}/workflows", {"name": "typed", "args": {"files": [3]}})
    assert wrong.status_code == 422 and wrong.json()["error"]["details"][0]["path"] == "args/files/0"
    fine = flow.api.post(f"/api/sessions/{flow.chat['id']}/workflows",
                         {"name": "typed", "args": {"files": ["a", "b"]}, "dry_run": True})
    assert fine.status_code == 200, fine.text
    broken = flow.api.post(f"/api/sessions/{flow.chat['id']}/workflows",
                           {"script": 'export const meta = {name: "b", description: "d", args: {type: 7}};\n'
                                      'return 1;\n'})
    assert broken.status_code == 422 and "meta.args must be a JSON Schema" in broken.json()["error"]["message"]
