"""The `probe` run kind: a self-test that drives the whole durable pipeline without a model.

A probe run takes `{steps, step_seconds}` and journals `steps` steps, each sleeping `step_seconds`.
Operators use it to check a deployment end to end (`boocode run probe`); tests and benchmarks use it
to kill workers mid-run and count that every step was recorded exactly once.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

from orchestrator.domain.probe import validate_probe_input
from orchestrator.lifecycle import Finish, RunContext, RunOutcome


def run_probe(context: RunContext) -> RunOutcome:
    spec = validate_probe_input(context.run.input)
    for index in range(spec["steps"]):
        context.step(f"probe/{index}", functools.partial(_tick, index, spec["step_seconds"]), kind="probe")
    return Finish(result={"steps": spec["steps"], "served_from_journal": context.journal_hits})


def _tick(index: int, seconds: float) -> dict[str, Any]:
    if seconds:
        time.sleep(seconds)
    return {"index": index}


def handler_from_settings(settings: object) -> Callable[[RunContext], RunOutcome]:
    """The `probe` kind's handler (orchestrator/runkinds.py); it needs no settings."""
    return run_probe
