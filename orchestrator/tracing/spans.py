"""An agent run's spans: run > turn > model call / tool call, written in the journal's transactions
(the rows and their events are orchestrator/store/spans.py; what goes in them is decided here).

Model call spans carry the prompt as segments (each segment's content stored once as a blob, so a
long session costs storage linear in its length), usage, cost and the cache diagnosis against the
session's previous model call. Large tool arguments and results are stored as blobs with a preview.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

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


def open_turn(session: Session, run: Run, turn: int) -> None:
    spans.start_span(session, run_id=run.id, session_id=run.session_id, key=RUN_SPAN, kind="run", name=run.kind,
                     restart=False)
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
                     stored: set[str] | None = None) -> None:
    """`stored`: digests of blobs known to be stored (`blobs.put_blobs`)."""
    encoded = encode_segments(provider.model, {}, tools, messages)
    segments = prompt_segments(provider.model, {}, tools, messages, encoded)
    digests = blobs.put_blobs(session, [(data, "application/json") for data in encoded], stored=stored)
    for segment, digest in zip(segments, digests):
        segment["blob"] = digest
    spans.start_span(session, run_id=run.id, session_id=run.session_id, key=model_key(turn),
                     kind="model_call", name=provider.model, parent_key=turn_key(turn), turn=turn,
                     attributes={"model": provider.model, "provider": provider.name, "prompt_segments": segments,
                                 "cache_lifetime_seconds": provider.cache_lifetime_seconds})


def finish_model_span(session: Session, run: Run, turn: int, result: ModelResult,
                      provider: Provider) -> dict[str, Any]:
    key = model_key(turn)
    span = spans.load_span(session, run.id, key)
    previous = spans.previous_model_call(session, run.session_id, span.position if span else None)
    cost = compute_cost(result.usage, price_for(result.model or provider.model, provider.prices))
    cache = diagnose(span.attributes.get("prompt_segments", []) if span else [], result.usage,
                     previous=previous.prompt_segments if previous else None,
                     previous_ended_at=previous.ended_at if previous else None,
                     started_at=span.started_at if span else datetime.now(timezone.utc),
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
