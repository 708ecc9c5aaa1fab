"""The `probe` run kind: a self-test that drives the whole durable pipeline without a model.

A probe run takes `{steps, step_seconds}` and journals `steps` steps, each sleeping `step_seconds`.
Operators use it to check a deployment end to end (`boocode run probe`); tests and benchmarks use it
to kill workers mid-run and count that every step was recorded exactly once.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from orchestrator.errors import ValidationError
from orchestrator.lifecycle import Finish, RunContext, RunOutcome

MAX_STEPS = 10_000
MAX_STEP_SECONDS = 60.0


def validate_probe_input(data: dict[str, Any]) -> dict[str, Any]:
    steps = data.get("steps", 3)
    step_seconds = data.get("step_seconds", 0.1)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ValidationError(f"steps must be a whole number from 1 to {MAX_STEPS}", details={"field": "steps"})
    if isinstance(step_seconds, bool) or not isinstance(step_seconds, (int, float)) \
            or not 0 <= step_seconds <= MAX_STEP_SECONDS:
        raise ValidationError(f"step_seconds must be a number from 0 to {MAX_STEP_SECONDS}",
                              details={"field": "step_seconds"})
    return {"steps": steps, "step_seconds": float(step_seconds)}


def run_probe(context: RunContext) -> RunOutcome:
    spec = validate_probe_input(context.run.input)
    for index in range(spec["steps"]):
        context.step(f"probe/{index}", lambda index=index: _tick(index, spec["step_seconds"]), kind="probe")
    return Finish(result={"steps": spec["steps"], "served_from_journal": context.journal_hits})


def _tick(index: int, seconds: float) -> dict[str, Any]:
    if seconds:
        time.sleep(seconds)
    return {"index": index}


def handler_from_settings(settings: object) -> Callable[[RunContext], RunOutcome]:
    """The `probe` kind's handler (orchestrator/runkinds.py); it needs no settings."""
    return run_probe
