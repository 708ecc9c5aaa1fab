"""The agent turn's decision, table-driven over journals: no services (orchestrator/agent/decision.py)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.agent.decision import CallModel, Conclude, RunTools, StopAtCap, StopRepeating, decide, schema_retries
from orchestrator.domain.keys import feedback_key, model_key, tool_key
from orchestrator.llm.client import ModelResult, ToolCallRequest
from orchestrator.store.journal import Entry


def answer(text: str = "done") -> dict[str, Any]:
    return ModelResult(text=text).to_dict()


def failed() -> dict[str, Any]:
    return ModelResult(error={"code": "model_error", "message": "boom"}).to_dict()


def calls(*arguments: str, name: str = "glob") -> dict[str, Any]:
    return ModelResult(tool_calls=[ToolCallRequest(id=f"c{index}", name=name, arguments=argument)
                                   for index, argument in enumerate(arguments)]).to_dict()


def journal(*entries: tuple[str, str, Any]) -> dict[str, Entry]:
    return {key: Entry(status, output) for key, status, output in entries}


F, S = "finished", "started"
TOOL = {"id": "c0", "name": "glob"}

CASES = [
    ("a new run calls the model", journal(), CallModel(0)),
    ("a model call started but not finished is made again",
     journal((model_key(0), S, None)), CallModel(0)),
    ("a final answer whose outcome was not recorded concludes",
     journal((model_key(0), F, answer())), Conclude(0, ModelResult.from_dict(answer()))),
    ("a failed call concludes (the run fails)",
     journal((model_key(0), F, failed())), Conclude(0, ModelResult.from_dict(failed()))),
    ("tool calls not yet run are run",
     journal((model_key(0), F, calls('{"pattern": "*"}'))),
     RunTools(0, ModelResult.from_dict(calls('{"pattern": "*"}')), repeated=False)),
    ("a tool call started but not recorded is finished",
     journal((model_key(0), F, calls("{}", "{}")), (tool_key(0, 0), F, {}), (tool_key(0, 1), S, None)),
     RunTools(0, ModelResult.from_dict(calls("{}", "{}")), repeated=False)),
    ("every tool recorded (one interrupted): the next turn calls the model",
     journal((model_key(0), F, calls("{}", "{}")), (tool_key(0, 0), F, {}),
             (tool_key(0, 1), "interrupted", {})),
     CallModel(1)),
    ("the same calls as the turn before are answered with a reminder",
     journal((model_key(0), F, calls('{"a": 1}')), (tool_key(0, 0), F, {}), (model_key(1), F, calls('{ "a":1 }'))),
     RunTools(1, ModelResult.from_dict(calls('{ "a":1 }')), repeated=True)),
    ("the same calls a third time in a row stop the run",
     journal((model_key(0), F, calls("{}")), (tool_key(0, 0), F, {}),
             (model_key(1), F, calls("{}")), (tool_key(1, 0), F, {}), (model_key(2), F, calls("{}"))),
     StopRepeating(2, ModelResult.from_dict(calls("{}")))),
    ("different arguments are no repeat",
     journal((model_key(0), F, calls('{"a": 1}')), (tool_key(0, 0), F, {}), (model_key(1), F, calls('{"a": 2}'))),
     RunTools(1, ModelResult.from_dict(calls('{"a": 2}')), repeated=False)),
    ("at the step cap with every tool recorded: stop",
     journal((model_key(0), F, calls("{}")), (tool_key(0, 0), F, {}),
             (model_key(1), F, calls("[1]")), (tool_key(1, 0), F, {})),
     StopAtCap(2)),
    ("at the step cap with tools pending: the tools still run first",
     journal((model_key(0), F, calls("{}")), (tool_key(0, 0), F, {}), (model_key(1), F, calls("[1]"))),
     RunTools(1, ModelResult.from_dict(calls("[1]")), repeated=False)),
    ("an answer sent back for its schema: the model is called again",
     journal((model_key(0), F, answer("not json")), (feedback_key(0), F, {"text": "again"})), CallModel(1)),
    ("feedback begun but not recorded: conclude again (it is journaled once)",
     journal((model_key(0), F, answer("not json")), (feedback_key(0), S, None)),
     Conclude(0, ModelResult.from_dict(answer("not json")))),
]


@pytest.mark.parametrize(("journal_entries", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_decide(journal_entries: dict[str, Entry], expected: object) -> None:
    assert decide(journal_entries, max_steps=2) == expected


def test_a_run_at_the_cap_with_no_turns_left_is_stopped_before_calling() -> None:
    assert decide(journal(), max_steps=0) == StopAtCap(0)


def test_schema_retries_count_only_recorded_feedback() -> None:
    steps = journal((feedback_key(0), F, {}), (feedback_key(1), S, None), (feedback_key(2), F, {}))
    assert [schema_retries(steps, turn) for turn in range(4)] == [0, 1, 1, 2]
