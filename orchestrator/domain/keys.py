"""Journal step keys and trace span keys: the one place they are spelled.

A run's journal and its spans share keys, so a step re-run after a crash updates its span (the span
id is derived from run and key, orchestrator/store/spans.py). Turns are zero-padded to four digits so
keys sort in turn order.

    run                         the run's span
    turn/0003                   a turn's span
    turn/0003/model             the turn's model call (step and span)
    turn/0003/tool/1            its second tool call (step and span)
    turn/0003/schema_feedback   the answer did not match the output schema: told to the model (step)
    turn/0003/repeating         stopped: the model kept making the same call (step)
    step_cap                    stopped: the step cap was reached (step)
"""

from __future__ import annotations

import re

RUN_SPAN = "run"
STEP_CAP = "step_cap"
_MODEL_STEP = re.compile(r"^turn/(\d{4,})/model$")


def turn_key(turn: int) -> str:
    return f"turn/{turn:04d}"


def model_key(turn: int) -> str:
    return f"{turn_key(turn)}/model"


def tool_key(turn: int, index: int) -> str:
    return f"{turn_key(turn)}/tool/{index}"


def feedback_key(turn: int) -> str:
    return f"{turn_key(turn)}/schema_feedback"


def repeating_key(turn: int) -> str:
    return f"{turn_key(turn)}/repeating"


def model_turn(key: str) -> int | None:
    """The turn a model-call key belongs to; None for any other key."""
    match = _MODEL_STEP.match(key)
    return int(match.group(1)) if match else None
