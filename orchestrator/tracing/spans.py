"""An agent run's spans: run > turn > model call / tool call, written in the journal's transactions
(the rows and their events are orchestrator/store/spans.py; what goes in them is decided here).

Model call spans carry the prompt as segments (each segment's content stored once as a blob, so a
long session costs storage linear in its length), usage, cost and the cache diagnosis against the
session's previous model call. Large tool arguments and results are stored as blobs with a preview.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from orchestrator.domain.keys import RUN_SPAN, model_key, tool_key, turn_key
from orchestrator.llm.client import ModelResult, Provider, ToolCallRequest
from orchestrator.llm.prices import compute_cost, price_for
from orchestrator.store import blobs, spans
from orchestrator.store.models import Run
from orchestrator.tools.base import ToolResult
from orchestrator.tracing.cache import diagnose, encode_segments, prompt_segments

INLINE_LIMIT = 4096


def payload(session: Session, text: str) -> dict[str, Any]:
    """Small values inline; large ones as a blob reference with a preview."""
    if len(text) <= INLINE_LIMIT:
        return {"inline": text}
    digest = blobs.put_blob(session, text.encode(), "text/plain; charset=utf-8")
    return {"blob": digest, "size": len(text), "preview": text[:500]}


class StartedCall(NamedTuple):
    """What a model call's span began with, kept by the task for the call's end (which would otherwise
    read the span back, its prompt segments included)."""

    span_id: uuid.UUID
    position: int
    started_at: datetime
    segments: list[dict[str, Any]]


def open_turn(session: Session, run: Run, turn: int, *, run_span_open: bool = False) -> None:
    """Open the turn's span, and the run's unless `run_span_open` (this task opened it already)."""
    if not run_span_open:
        spans.start_span(session, run_id=run.id, session_id=run.session_id, key=RUN_SPAN, kind="run",
                         name=run.kind, restart=False)
    spans.start_span(session, run_id=run.id, session_id=run.session_id, key=turn_key(turn), kind="turn",
                     name=f"turn {turn}", parent_key=RUN_SPAN, turn=turn, restart=False)


def close_turn(session: Session, run: Run, turn: int, status: str = "ok") -> None:
    spans.end_span(session, run_id=run.id, key=turn_key(turn), status=status)


def close_run(session: Session, run: Run, status: str, result: Any = None) -> None:
    summary = spans.summarize(session, run_id=run.id)
    spans.end_span(session, run_id=run.id, key=RUN_SPAN, status=status,
                   attributes={"summary": summary, "result": result})


def start_model_span(session: Session, run: Run, turn: int, provider: Provider,
                     messages: list[dict[str, Any]], tools: list[dict[str, Any]], *,
                     stored: set[str] | None = None) -> StartedCall | None:
    """`stored`: digests of blobs known to be stored (`blobs.put_blobs`)."""
    encoded = encode_segments(provider.model, {}, tools, messages)
    segments = prompt_segments(provider.model, {}, tools, messages, encoded)
    digests = blobs.put_blobs(session, [(data, "application/json") for data in encoded], stored=stored)
    for segment, digest in zip(segments, digests):
        segment["blob"] = digest
    started = spans.start_span(session, run_id=run.id, session_id=run.session_id, key=model_key(turn),
                               kind="model_call", name=provider.model, parent_key=turn_key(turn), turn=turn,
                               attributes={"model": provider.model, "provider": provider.name,
                                           "prompt_segments": segments,
                                           "cache_lifetime_seconds": provider.cache_lifetime_seconds})
    if started is None:
        return None
    return StartedCall(uuid.UUID(started["id"]), started["position"], datetime.fromisoformat(started["started_at"]),
                       segments)


def finish_model_span(session: Session, run: Run, turn: int, result: ModelResult,
                      provider: Provider, started: StartedCall | None = None,
                      last: StartedCall | None = None) -> dict[str, Any]:
    """End the call's span with its usage, cost and cache diagnosis. `started`: what its start returned in
    this task (without it the span is read back); `last`: this task's previous call, whose segments are
    not read back when it is also the session's previous call (usually: one run at a time)."""
    key = model_key(turn)
    if started is None:
        span = spans.load_span(session, run.id, key)
        if span is not None:
            started = StartedCall(span.id, span.position, span.started_at, span.attributes.get("prompt_segments", []))
    previous = spans.previous_model_call(session, run.session_id, started.position if started else None,
                                         known=last.span_id if last else None)
    previous_segments = (last.segments if previous.is_known and last else previous.prompt_segments) \
        if previous else None
    cost = compute_cost(result.usage, price_for(result.model or provider.model, provider.prices))
    cache = diagnose(started.segments if started else [], result.usage,
                     previous=previous_segments,
                     previous_ended_at=previous.ended_at if previous else None,
                     started_at=started.started_at if started else datetime.now(timezone.utc),
                     cache_lifetime_seconds=provider.cache_lifetime_seconds)
    usage = {name: value for name, value in result.usage.to_dict().items() if name != "raw"}
    attributes = {"model": result.model, "finish_reason": result.finish_reason, "usage": usage,
                  "usage_raw": result.usage.raw, "cost": cost, "cache": cache, "attempts": result.attempts,
                  "latency_ms": result.latency_ms, "time_to_first_token_ms": result.time_to_first_token_ms,
                  "error": result.error, "output": payload(session, result.text),
                  "tool_calls": [call.name for call in result.tool_calls]}
    spans.end_span(session, run_id=run.id, key=key, status="error" if result.error else "ok",
                   attributes=attributes)
    return attributes


def start_tool_span(session: Session, run: Run, turn: int, index: int, call: ToolCallRequest) -> None:
    spans.start_span(session, run_id=run.id, session_id=run.session_id,
                     key=tool_key(turn, index), kind="tool_call", name=call.name,
                     parent_key=turn_key(turn), turn=turn,
                     attributes={"tool": call.name, "tool_call_id": call.id,
                                 "arguments": payload(session, call.arguments)})


def finish_tool_span(session: Session, run: Run, turn: int, index: int, result: ToolResult) -> None:
    status = "interrupted" if result.data.get("interrupted") else ("error" if result.is_error else "ok")
    spans.end_span(session, run_id=run.id, key=tool_key(turn, index), status=status,
                   attributes={"result": payload(session, result.content), "is_error": result.is_error,
                               "has_diff": result.diff is not None, "data": result.data})
