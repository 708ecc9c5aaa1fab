"""`Failure`: the one shape of "why this did not work" — a run's error, a refused call, a failed step.

    Failure(code, message, details=None, retryable=False, context={})
        code       stable, snake_case, for programs (`step_cap_reached`, `worker_crashed`)
        message    for people: what happened and what to do about it
        details    structured evidence (the crash log, the failures of a workflow), sent as `details`
        retryable  whether trying the same thing again may succeed (a flow step's retry asks)
        context    where it happened (`line`, `signal`, `worktree`), sent beside code and message

Stored and sent as `to_dict()`, the shape clients and the REST errors already read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Failure:
    code: str
    message: str
    details: Any = None
    retryable: bool = False
    context: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, **self.context}
        if self.details is not None:
            body["details"] = self.details
        body["retryable"] = self.retryable
        return body

    def with_context(self, **context: Any) -> "Failure":
        return Failure(self.code, self.message, self.details, self.retryable, {**self.context, **context})


def as_dict(error: "Failure | dict[str, Any] | None") -> dict[str, Any] | None:
    """A Failure as stored; a plain dict (from code not yet moved to Failure) as it is."""
    return error.to_dict() if isinstance(error, Failure) else error
