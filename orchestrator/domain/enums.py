"""Enumerations shared from the database to the wire.

The string values are stored in Postgres and sent to clients unchanged, so renaming one is a
migration and an API change.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """A member's role in a project, weakest first."""

    VIEWER = "viewer"
    MEMBER = "member"
    OWNER = "owner"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: "Role") -> bool:
        return self.rank >= needed.rank


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({
    RunStatus.COMPLETED,
    RunStatus.COMPLETED_WITH_FAILURES,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
    RunStatus.INTERRUPTED,
})


class RunKind(StrEnum):
    AGENT = "agent"
    PROBE = "probe"
    WORKFLOW = "workflow"
    SUBAGENT = "subagent"
    FLOW = "flow"


class StepStatus(StrEnum):
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class MessageRole(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"
    SYSTEM = "system"


class PartType(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    DIFF = "diff"
    ERROR = "error"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"


class SpanStatus(StrEnum):
    RUNNING = "running"
    OK = "ok"
    ERROR = "error"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class CallStatus(StrEnum):
    """A workflow agent() call's status (workflow_calls.status)."""

    QUEUED = "queued"  # made by the script, waiting for a free slot of the run's concurrency
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REFUSED = "refused"


class FlowStepState(StrEnum):
    """A step's state in a flow run; the values are stored and sent to clients unchanged."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    EXCLUDED = "excluded"
    UPSTREAM_FAILED = "upstream_failed"
    CANCELLED = "cancelled"
