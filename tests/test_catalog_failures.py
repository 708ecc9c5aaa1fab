"""Every built-in workflow survives a failed agent and says what failed.

For each catalog workflow and each of its agent roles (the first agent, a fan-out slot, the last one), a
run where the fake model fails that role's calls (HTTP 400: the agent ends and `agent()` gives null; or
output that never fits the schema) must end `completed_with_failures`, not crash, with a value that
names the failed agents and still carries what the others found.

All cases run at once on one stack and one worker, each in its own project: the fake model tells the
cases apart by the project root in the system prompt.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tests.conftest import new_session
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import CATALOG_ARGS, WORKFLOW_DONE, WorkerProcess, example_for, first_user_text

ROOT = re.compile(r"\(root: (\S+)\)")
SCHEMA_MARKER = "validates against this JSON Schema:\n"


@dataclass
class Case:
    workflow: str
    role: str          # which agents fail: a regex on their prompt
    failing: str       # a label the value's `failed` list must name
    check: Callable[[Any], None] = lambda value: None
    answers: dict[str, str] = field(default_factory=dict)  # other prompts' fixed answers (regex -> text)
    unusable: bool = False  # the failing agents answer with output that never fits their schema

    @property
    def id(self) -> str:
        return f"{self.workflow}:{self.failing}{':unusable' if self.unusable else ''}"


def _eq(actual: Any, expected: Any) -> None:
    assert actual == expected, (actual, expected)


CASES = [
    Case("deep-research", r"^Split this question", "planner",
         lambda value: (_eq(value["subQuestions"], [CATALOG_ARGS["deep-research"]["question"]]),
                        _eq(value["report"].startswith("notes on"), True))),
    Case("deep-research", r"^Research this sub-question", "research 1",
         lambda value: (_eq(value["report"], None), _eq(len(value["unanswered"]), 2), _eq(sorted(value["failed"]),
                                                                                    ["research 1", "research 2"]))),
    Case("deep-research", r"^Write a report", "report",
         lambda value: _eq(value["report"].startswith("(the report agent failed; the research notes follow)"), True)),
    Case("review-code", r"^List the source files", "scope",
         lambda value: (_eq(value["files"], ["src/"]), _eq(len(value["findings"]), 2))),
    Case("review-code", r"^List the source files", "scope",
         lambda value: _eq(value["files"], ["src/"]), unusable=True),
    Case("review-code", r"^Review src/app.py", "src/app.py",
         lambda value: (_eq(value["findings"], []), _eq(value["notReviewed"], ["src/app.py", "src/app.py"]),
                        _eq("No review succeeded" in value["summary"], True))),
    Case("review-code", r"^Summarise these review findings", "summary",
         lambda value: (_eq(len(value["findings"]), 4), _eq("the summary agent failed" in value["summary"], True))),
    Case("find-issues", r"^Split .* into at most 6 parts", "map",
         lambda value: (_eq(value["parts"], ["src/"]), _eq(len(value["confirmed"]), 2))),
    Case("find-issues", r"^Find likely bugs", "hunt src/app.py",
         lambda value: (_eq(value["confirmed"], []), _eq(value["unsearched"], ["src/app.py", "src/app.py"]))),
    Case("find-issues", r"^Verify or refute", "verify src/app.py",
         lambda value: (_eq(value["confirmed"], []), _eq(len(value["unverified"]), 4), _eq(value["complete"], False))),
    Case("multi-review", r"through the lens of correctness", "correctness",
         lambda value: (_eq(value["missingLenses"], ["correctness"]), _eq(len(value["lenses"]), 3),
                        _eq(value["recommendation"], "approve"))),
    Case("multi-review", r"strictly through the lens", "security",
         lambda value: (_eq(value["lenses"], []), _eq(value["recommendation"], None),
                        _eq(len(value["missingLenses"]), 4))),
    Case("multi-review", r"^You are the judge", "judge",
         lambda value: (_eq(value["recommendation"], None), _eq(len(value["reviews"]), 4))),
    Case("plan-verify", r"^Plan this task", "plan 1",
         lambda value: (_eq(value["plan"], None), _eq(value["approved"], False))),
    Case("plan-verify", r"^Check this plan", "verify 1",
         lambda value: (_eq(value["plan"] is not None, True), _eq(value["approved"], False),
                        _eq(value["openProblems"], ["reviewer 1 failed: this plan was not checked"]))),
    Case("plan-verify", r"^Revise the plan", "plan 2",
         lambda value: (_eq(value["approved"], False),
                        _eq(value["openProblems"], ["the revision failed; these problems remain:", "wrong file"])),
         answers={r"^Check this plan": json.dumps({"approved": False, "problems": ["wrong file"]})}),
    Case("bounty-hunt", r"^You are bug hunter 1 ", "hunter 1",
         lambda value: (_eq(value["claims"], 2), _eq(value["failedHunters"], [1]), _eq(len(value["confirmed"]), 2))),
    Case("bounty-hunt", r"^You are a skeptic", "judge: src/app.py",  # example_for titles every claim so
         lambda value: (_eq(value["confirmed"], []), _eq(len(value["unjudged"]), 4))),
]


class CatalogModel:
    """Answers schema agents with the smallest valid value, others with notes; fails each case's role."""

    def __init__(self, cases: dict[str, Case]) -> None:
        self.cases = cases  # by project root

    def respond(self, body: dict[str, Any]) -> Reply:
        system = body["messages"][0]["content"]
        prompt = first_user_text(body)
        case = self.cases[ROOT.search(system).group(1)]
        if re.search(case.role, prompt):
            if case.unusable:
                return Reply(text="I would rather not answer in JSON.", usage=openai_usage(200, 10))
            return Reply(status=400, error_message="scripted failure of this agent")
        for pattern, text in case.answers.items():
            if re.search(pattern, prompt):
                return Reply(text=text, usage=openai_usage(200, 20))
        if SCHEMA_MARKER in system:
            schema = json.loads(system.split(SCHEMA_MARKER, 1)[1])
            return Reply(text=json.dumps(example_for(schema)), usage=openai_usage(200, 20))
        return Reply(text=f"notes on: {prompt[:40]}", usage=openai_usage(200, 20))


def check_case(case: Case, status: dict) -> None:
    assert status["run"]["status"] == "completed_with_failures", (status["run"]["status"], status["error"])
    assert status["error"] is None
    value = status["value"]
    assert isinstance(value, dict) and case.failing in value["failed"], value
    failed_labels = {failure.get("label") for failure in status["failures"]}
    assert case.failing in failed_labels, status["failures"]
    assert set(value["failed"]) <= failed_labels, (value["failed"], status["failures"])
    case.check(value)


def test_every_catalog_workflow_survives_each_of_its_agents_failing(make_stack, fake: FakeModelServer,
                                                                    tmp_path: Path) -> None:
    """All cases start together on one stack and one worker; every case is checked, then all problems shown."""
    stack = make_stack(model_base_url=fake.base_url, model_name="gpt-4o-mini", model_api_key="sk-fake",
                       workflow_concurrency=8)
    by_root: dict[str, Case] = {}
    started: list[tuple[Case, str]] = []
    fake.responder = CatalogModel(by_root).respond
    for index, case in enumerate(CASES):
        root = tmp_path / f"case-{index}"
        chat = new_session(stack.api, root)
        by_root[str(root)] = case
        run = stack.api.ok("POST", f"/api/sessions/{chat['id']}/workflows",
                           {"name": case.workflow, "args": CATALOG_ARGS[case.workflow]}, expected=202)["run"]
        started.append((case, run["id"]))
    worker = WorkerProcess(stack.settings, tmp_path, name="catalog@localhost", concurrency=4).start()
    problems = []
    try:
        for case, run_id in started:
            stack.api.wait_for_run(run_id, WORKFLOW_DONE, timeout=240)
            status = stack.api.ok("GET", f"/api/runs/{run_id}/workflow")
            try:
                check_case(case, status)
            except (AssertionError, KeyError, TypeError) as error:  # one broken case must not hide the rest
                problems.append(f"{case.id}: {error!r}"[:1500])
    finally:
        worker.stop()
    assert not problems, "\n".join(problems)
