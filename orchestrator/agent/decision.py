"""What an agent turn does next, decided from the journal alone: no I/O, so it is tested table-driven.

    turns = finished model calls in the journal
    the last turn was a final answer (or a failed call)
        and no schema feedback followed it          -> Conclude  (a crash came before the outcome)
    the last turn asked for tools not all recorded
        the same calls MAX_REPEATS turns in a row   -> StopRepeating
        otherwise                                   -> RunTools  (repeated: answered with a reminder)
    turns == max_steps                              -> StopAtCap
    otherwise                                       -> CallModel(turn)

`run_turn` asks once, acts, and after a model call asks again over the journal with that call in it:
resuming after a crash and going on after a fresh call are the same path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping

from orchestrator.domain.enums import StepStatus
from orchestrator.domain.keys import feedback_key, model_key, model_turn, tool_key
from orchestrator.llm.client import ModelResult
from orchestrator.store.journal import Entry

# The same call once more gets a reminder instead of a result; once more after that stops the run.
MAX_REPEATS = 2
FINISHED = StepStatus.FINISHED


@dataclass(frozen=True)
class CallModel:
    turn: int


@dataclass(frozen=True)
class RunTools:
    """Run (or finish recording) the tool calls of `turn`; `repeated`: the same calls as the turn before."""

    turn: int
    result: ModelResult
    repeated: bool


@dataclass(frozen=True)
class Conclude:
    """A final answer or a failed model call: the run ends (or, with a schema, may try again)."""

    turn: int
    result: ModelResult


@dataclass(frozen=True)
class StopRepeating:
    turn: int
    result: ModelResult


@dataclass(frozen=True)
class StopAtCap:
    turns: int


Decision = CallModel | RunTools | Conclude | StopRepeating | StopAtCap


def finished(steps: Mapping[str, Entry], key: str) -> bool:
    entry = steps.get(key)
    return entry is not None and entry.status == FINISHED


def model_turns(steps: Mapping[str, Entry]) -> int:
    """How many model calls finished (turns are numbered 0, 1, … without gaps)."""
    return sum(1 for key, entry in steps.items() if entry.status == FINISHED and model_turn(key) is not None)


def decide(steps: Mapping[str, Entry], max_steps: int) -> Decision:
    turn = model_turns(steps)
    if turn:
        last = ModelResult.from_dict(steps[model_key(turn - 1)].output)
        if last.error is not None or not last.tool_calls:
            if not finished(steps, feedback_key(turn - 1)):
                return Conclude(turn - 1, last)
        elif not all(finished_or_interrupted(steps, tool_key(turn - 1, index))
                     for index in range(len(last.tool_calls))):
            repeats = count_repeats(steps, turn - 1, last)
            if repeats >= MAX_REPEATS:
                return StopRepeating(turn - 1, last)
            return RunTools(turn - 1, last, repeated=repeats > 0)
    if turn >= max_steps:
        return StopAtCap(turn)
    return CallModel(turn)


def finished_or_interrupted(steps: Mapping[str, Entry], key: str) -> bool:
    """A tool step whose result is recorded (finished, or interrupted by a crash and recorded as such)."""
    entry = steps.get(key)
    return entry is not None and entry.status != StepStatus.STARTED


def signature(result: ModelResult) -> list[tuple[str, str]]:
    """The calls a turn made, arguments normalised, to compare turns."""
    def normal(arguments: str) -> str:
        try:
            return json.dumps(json.loads(arguments or "{}"), sort_keys=True)
        except json.JSONDecodeError:
            return arguments
    return [(call.name, normal(call.arguments)) for call in result.tool_calls]


def count_repeats(steps: Mapping[str, Entry], turn: int, result: ModelResult) -> int:
    """How many turns in a row just before `turn` made exactly the same tool calls."""
    wanted, repeats = signature(result), 0
    for earlier in range(turn - 1, -1, -1):
        entry = steps.get(model_key(earlier))
        if entry is None or entry.status != FINISHED or signature(ModelResult.from_dict(entry.output)) != wanted:
            break
        repeats += 1
    return repeats


def schema_retries(steps: Mapping[str, Entry], turn: int) -> int:
    """How many times before `turn` an answer was sent back for not matching the output schema."""
    return sum(1 for index in range(turn) if finished(steps, feedback_key(index)))
