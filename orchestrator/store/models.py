"""SQLAlchemy 2 table definitions. Alembic migrations in `migrations/` mirror these exactly.

Every text and JSON column uses the storable types of `storable.py`, so no write can fail on a NUL
or a lone surrogate in untrusted content (tool output, model replies).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Sequence,
    String,
    Table,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from orchestrator.domain.enums import ApprovalStatus, CallStatus, FlowStepState, RunStatus, SpanStatus, StepStatus
from orchestrator.store.storable import StatusColumn, StorableJSONB, StorableString, StorableText


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: StorableJSONB, list[Any]: StorableJSONB, Any: StorableJSONB}


def table_of(model: type[Base]) -> Table:
    """A model's table, as the Table it is, for statements built once on it (the hot paths of
    store/spans.py, journal.py, events.py and runs.py: no ORM statement building per call)."""
    return cast(Table, model.__table__)


def expire_loaded(session: Session, model: type[Base], identifier: Any, attributes: list[str] | None = None) -> None:
    """A row this session loaded as a `model` no longer says what the table says (a statement built
    once on the table changed it, past the ORM): expire it (or just `attributes`), if it is loaded."""
    loaded = session.identity_map.get(session.identity_key(model, identifier))
    if loaded is not None:
        session.expire(loaded, attributes)


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)


def _created_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = _uuid_pk()
    username: Mapped[str] = mapped_column(StorableString(64), nullable=False, unique=True)
    display_name: Mapped[str | None] = mapped_column(StorableString(200))
    is_admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    password_hash: Mapped[str | None] = mapped_column(StorableText)
    created_at: Mapped[datetime] = _created_at()


class ApiToken(Base):
    """A bearer token. Only its SHA-256 is stored; the plain token is shown once at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    name: Mapped[str] = mapped_column(StorableString(200), nullable=False)
    token_hash: Mapped[str] = mapped_column(StorableString(64), nullable=False, unique=True)
    prefix: Mapped[str] = mapped_column(StorableString(16), nullable=False)
    created_at: Mapped[datetime] = _created_at()
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Browser sessions end on the server: at `expires_at`, or after `idle_seconds` without use.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    idle_seconds: Mapped[int | None] = mapped_column(Integer)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(StorableString(200), nullable=False)
    root_path: Mapped[str] = mapped_column(StorableText, nullable=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _created_at()
    # {"rules": [{"tool", "match"?, "decision"}]}; see orchestrator/tools/policy.py
    approval_policy: Mapped[dict[str, Any]] = mapped_column(StorableJSONB, nullable=False, default=dict,
                                                            server_default="{}")
    # The project's own model provider (else the server's): see orchestrator/providers.py. The API key
    # is stored only encrypted, under "api_key_encrypted".
    provider: Mapped[dict[str, Any] | None] = mapped_column(StorableJSONB)


class ProjectMember(Base):
    __tablename__ = "project_members"
    __table_args__ = (CheckConstraint("role IN ('owner', 'member', 'viewer')", name="ck_project_members_role"),)

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True,
                                               index=True)
    role: Mapped[str] = mapped_column(StorableString(16), nullable=False)
    created_at: Mapped[datetime] = _created_at()


class ChatSession(Base):
    """A chat thread in a project. `last_seq` is the counter behind the gap-free event `seq`."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = _uuid_pk()
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=False,
                                                  index=True)
    title: Mapped[str] = mapped_column(StorableString(300), nullable=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    last_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")


class Message(Base):
    """One message with typed parts; `seq` is the seq of its `message.created` event (its order)."""

    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint("role IN ('user', 'assistant', 'tool', 'system')", name="ck_messages_role"),
        Index("ix_messages_session_seq_run", "session_id", "seq", postgresql_include=["run_id"]),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False)
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True)
    role: Mapped[str] = mapped_column(StorableString(16), nullable=False)
    parts: Mapped[list[Any]] = mapped_column(StorableJSONB, nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _created_at()


class Run(Base):
    """One unit of durable work. The lease columns fence concurrent executors (see store/runs.py)."""

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'waiting', 'completed', 'completed_with_failures', "
                        "'failed', 'cancelled', 'interrupted')", name="ck_runs_status"),
        Index("ix_runs_session_created", "session_id", "created_at"),
        Index("ix_runs_project_created", "project_id", "created_at"),
        Index("ix_runs_recoverable", "status", "lease_expires_at",
              postgresql_where="status IN ('queued', 'running')"),
        Index("ix_runs_wake_at", "wake_at", postgresql_where="wake_at IS NOT NULL"),
        Index("ix_runs_open_subagents", "created_by", "created_at",
              postgresql_where="kind = 'subagent' AND status IN ('queued', 'running', 'waiting')"),
        Index("ix_runs_session_chat", "session_id", "created_at", "id",
              postgresql_where="kind = 'agent' AND parent_id IS NULL"),
        Index("ix_runs_session_children", "session_id", "id", postgresql_where="parent_id IS NOT NULL"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(StorableString(32), nullable=False)
    status: Mapped[RunStatus] = mapped_column(StatusColumn(RunStatus, 32), nullable=False, default="queued")
    input: Mapped[dict[str, Any]] = mapped_column(StorableJSONB, nullable=False, default=dict)
    result: Mapped[Any | None] = mapped_column(StorableJSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(StorableJSONB)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_owner: Mapped[str | None] = mapped_column(StorableString(200))
    lease_epoch: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claims: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # A workflow's next tick is already asked for: finishing children need not enqueue another.
    tick_pending: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default="false")
    # A deferred run that must look again at a set time (a flow step's timeout or retry back-off).
    wake_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A workflow's script was last replayed then, and how often (ticks that only start queued calls
    # skip the replay; `claims` counts the ticks).
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replays: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # A background subagent holds one of the server's (and its user's) subagent slots from here until it ends.
    admitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A finished subagent's result reached its session: read by the agent, or a follow-up turn was queued.
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Liveness (migration 0009, store/runs.py, recovery.py): the sweep's re-enqueues since the last normal
    # enqueue (its back-off), and takeovers without progress (the poison-run guard) with their evidence.
    dispatches: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    crashes: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    progress_mark: Mapped[int | None] = mapped_column(Integer)
    crash_log: Mapped[list[Any] | None] = mapped_column(StorableJSONB)


class Step(Base):
    """The journal. `(run_id, step_key)` is unique: a step's result is recorded exactly once."""

    __tablename__ = "steps"
    __table_args__ = (
        UniqueConstraint("run_id", "step_key", name="uq_steps_run_step_key"),
        CheckConstraint("status IN ('started', 'finished', 'failed', 'interrupted')", name="ck_steps_status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    step_key: Mapped[str] = mapped_column(StorableString(500), nullable=False)
    kind: Mapped[str] = mapped_column(StorableString(64), nullable=False)
    status: Mapped[StepStatus] = mapped_column(StatusColumn(StepStatus, 16), nullable=False)
    input_hash: Mapped[str | None] = mapped_column(StorableString(64))
    output: Mapped[Any | None] = mapped_column(StorableJSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(StorableJSONB)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    epoch: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Event(Base):
    """The per-session ordered log replayed by the WebSocket. `seq` is gap-free per session."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("session_id", "seq", name="uq_events_session_seq"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    type: Mapped[str] = mapped_column(StorableString(64), nullable=False)
    run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    data: Mapped[dict[str, Any]] = mapped_column(StorableJSONB, nullable=False, default=dict)
    created_at: Mapped[datetime] = _created_at()


class Blob(Base):
    """Content-addressed payloads (prompts, tool outputs, images), keyed by SHA-256 of the bytes."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(StorableString(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    media_type: Mapped[str] = mapped_column(StorableString(200), nullable=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = _created_at()


class ProjectBlob(Base):
    """A blob uploaded to a project: a message may show, and a member download, only its own project's."""

    __tablename__ = "project_blobs"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), ForeignKey("blobs.sha256", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = _created_at()


class Span(Base):
    """A trace span: run > turn > model call / tool call. Written at start (ended_at null while it
    runs) and completed at end. `position` orders spans for keyset pagination; `id` is derived from
    the run and the span's key, so re-running a step after a crash updates its span instead of adding one."""

    __tablename__ = "spans"
    __table_args__ = (
        CheckConstraint("kind IN ('run', 'turn', 'model_call', 'tool_call')", name="ck_spans_kind"),
        CheckConstraint("status IN ('running', 'ok', 'error', 'interrupted', 'cancelled')", name="ck_spans_status"),
        Index("ix_spans_session_position", "session_id", "position"),
        Index("ix_spans_run_position", "run_id", "position"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, Sequence("spans_position_seq"), nullable=False, unique=True,
                                          server_default=Sequence("spans_position_seq").next_value())
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    kind: Mapped[str] = mapped_column(StorableString(16), nullable=False)
    name: Mapped[str] = mapped_column(StorableString(200), nullable=False)
    status: Mapped[SpanStatus] = mapped_column(StatusColumn(SpanStatus, 16), nullable=False)
    turn: Mapped[int | None] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[float | None] = mapped_column(Float)
    attributes: Mapped[dict[str, Any]] = mapped_column(StorableJSONB, nullable=False, default=dict)


class Approval(Base):
    """A request to run a dangerous tool call, and the decision on it (one per journal step)."""

    __tablename__ = "approvals"
    __table_args__ = (
        UniqueConstraint("run_id", "step_key", name="uq_approvals_run_step_key"),
        CheckConstraint("status IN ('pending', 'approved', 'denied')", name="ck_approvals_status"),
        Index("ix_approvals_session_status", "session_id", "status"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False)
    step_key: Mapped[str] = mapped_column(StorableString(500), nullable=False)
    tool: Mapped[str] = mapped_column(StorableString(100), nullable=False)
    arguments: Mapped[dict[str, Any]] = mapped_column(StorableJSONB, nullable=False)
    rule: Mapped[dict[str, Any] | None] = mapped_column(StorableJSONB)
    status: Mapped[ApprovalStatus] = mapped_column(StatusColumn(ApprovalStatus, 16), nullable=False, default="pending")
    reason: Mapped[str | None] = mapped_column(StorableText)
    requested_at: Mapped[datetime] = _created_at()
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class WorkflowCall(Base):
    """One `agent()` call of a workflow run, keyed by its structural key (see docs/workflows.md).

    The row is the call's journal entry: written when the call is dispatched (with its child run), or
    `queued` before that while the run's concurrency has no free slot, and settled once from the
    child's outcome. `value` is what the script receives. `pass_number` is the
    run's pass (1, then +1 per resume) in which the call last ran; a call served in a later pass is
    "cached" there."""

    __tablename__ = "workflow_calls"
    __table_args__ = (
        UniqueConstraint("run_id", "call_key", name="uq_workflow_calls_run_key"),
        CheckConstraint("status IN ('queued', 'running', 'completed', 'failed', 'cancelled', 'refused')",
                        name="ck_workflow_calls_status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    call_key: Mapped[str] = mapped_column(StorableString(64), nullable=False)
    child_run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True)
    status: Mapped[CallStatus] = mapped_column(StatusColumn(CallStatus, 16), nullable=False)
    label: Mapped[str | None] = mapped_column(StorableText)
    phase: Mapped[str | None] = mapped_column(StorableText)
    prompt: Mapped[str] = mapped_column(StorableText, nullable=False)
    options: Mapped[dict[str, Any]] = mapped_column(StorableJSONB, nullable=False, default=dict)
    value: Mapped[Any | None] = mapped_column(StorableJSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(StorableJSONB)
    model: Mapped[str | None] = mapped_column(StorableText)
    tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    cost: Mapped[float] = mapped_column(Float, nullable=False, default=0.0, server_default="0")
    pass_number: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    served_pass: Mapped[int | None] = mapped_column(Integer)  # the latest pass that served it from the journal
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = _created_at()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WorkflowLog(Base):
    """A `log()` / `console.*` line or a `phase()` of a workflow run, once each however often the script
    is replayed: `log_key` derives from where in the script's structure the line was written."""

    __tablename__ = "workflow_logs"
    __table_args__ = (UniqueConstraint("run_id", "log_key", name="uq_workflow_logs_run_key"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    log_key: Mapped[str] = mapped_column(StorableString(64), nullable=False)
    level: Mapped[str] = mapped_column(StorableString(16), nullable=False)
    phase: Mapped[str | None] = mapped_column(StorableText)
    text: Mapped[str] = mapped_column(StorableText, nullable=False)
    created_at: Mapped[datetime] = _created_at()


class FlowStep(Base):
    """One step of a flow run: its state and its current attempt (docs/flows.md). The row is written
    by the run's ticks under its lease; `attempt` only grows, and fences results: a child's outcome
    counts only while its attempt is the one running here. `history` keeps every ended attempt."""

    __tablename__ = "flow_steps"
    __table_args__ = (
        UniqueConstraint("run_id", "step_id", name="uq_flow_steps_run_step"),
        CheckConstraint("state IN ('pending', 'running', 'completed', 'failed', 'timed_out', 'skipped', 'excluded', "
                        "'upstream_failed', 'cancelled')", name="ck_flow_steps_state"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    step_id: Mapped[str] = mapped_column(StorableString(200), nullable=False)
    state: Mapped[FlowStepState] = mapped_column(StatusColumn(FlowStepState, 16), nullable=False, default="pending")
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    first_attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    child_run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    timed_out_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[Any | None] = mapped_column(StorableJSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(StorableJSONB)
    reason: Mapped[str | None] = mapped_column(StorableText)
    tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    cost: Mapped[float] = mapped_column(Float, nullable=False, default=0.0, server_default="0")
    model: Mapped[str | None] = mapped_column(StorableText)
    history: Mapped[list[Any]] = mapped_column(StorableJSONB, nullable=False, default=list)
    updated_at: Mapped[datetime] = _created_at()


class FlowTrigger(Base):
    """A token that lets a program (CI, a git hook) start one flow of one project. Only its SHA-256 is
    stored; the plain token is shown once, to the owner who created it."""

    __tablename__ = "flow_triggers"

    id: Mapped[uuid.UUID] = _uuid_pk()
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=False,
                                                  index=True)
    flow_name: Mapped[str] = mapped_column(StorableString(200), nullable=False)
    token_hash: Mapped[str] = mapped_column(StorableString(64), nullable=False, unique=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _created_at()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class FlowSchedule(Base):
    """A flow's `schedule` turned on in one project (docs/flows.md, Schedules). The cron, time zone and
    overlap policy are read from the flow's definition at every beat; `last_fired_at` is the cursor:
    the last firing acted on, so a restarted beat neither loses nor repeats one. Runs it starts are
    created by `created_by` (the member who turned it on) and stop if they lose access."""

    __tablename__ = "flow_schedules"
    __table_args__ = (UniqueConstraint("project_id", "flow_name", name="uq_flow_schedules_project_flow"),)

    id: Mapped[uuid.UUID] = _uuid_pk()
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    flow_name: Mapped[str] = mapped_column(StorableString(200), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _created_at()
    cron: Mapped[str | None] = mapped_column(StorableText)
    timezone: Mapped[str | None] = mapped_column(StorableText)
    last_fired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    next_fire_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    missed: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    last_beat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[dict[str, Any] | None] = mapped_column(StorableJSONB)


class FlowFiring(Base):
    """One due firing of a schedule, written once: unique (schedule, fire_at) is what keeps two beat
    processes (or a beat and its restart) from starting the same firing twice. `outcome` is what the
    overlap policy made of it; a buffered firing gets its run when the open ones have finished."""

    __tablename__ = "flow_firings"
    __table_args__ = (
        UniqueConstraint("schedule_id", "fire_at", name="uq_flow_firings_schedule_fire_at"),
        CheckConstraint("outcome IN ('started', 'skipped', 'buffered', 'refused')", name="ck_flow_firings_outcome"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    schedule_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("flow_schedules.id", ondelete="CASCADE"),
                                                   nullable=False)
    fire_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    outcome: Mapped[str] = mapped_column(StorableString(16), nullable=False)
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True)
    cancelled: Mapped[list[Any]] = mapped_column(StorableJSONB, nullable=False, default=list)
    error: Mapped[dict[str, Any] | None] = mapped_column(StorableJSONB)
    created_at: Mapped[datetime] = _created_at()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
