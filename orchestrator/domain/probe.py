"""What a `probe` run takes (orchestrator/probe.py runs it): checked by the web front end before the
run is created and by the handler again, without either importing the other."""

from __future__ import annotations

from typing import Any

from orchestrator.errors import ValidationError

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
