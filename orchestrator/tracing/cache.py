"""Prompt-cache telemetry: what each model call's prompt was made of, and why its cache missed.

A prompt is recorded as ordered segments, the order providers cache in:

    model (name and request settings) · tools (each schema) · system prompt · each history message

Each segment keeps a hash and a token estimate (4 characters a token; an estimate, named as one).
Comparing a call with the session's previous call gives the first segment that differs, which is
what broke the cached prefix. With the provider's own numbers (cache read tokens) that yields:

    status  cold     no previous call and nothing read from cache
            hit      most of the unchanged prefix was read from cache
            partial  some, but clearly less than the unchanged prefix, was read
            miss     nothing read although a previous call exists
            unreported  the provider does not say what it read from its cache (llama.cpp): never
                     called a miss; a changed prefix is still named, since it is known here
    cause   cold_start · model_changed · tools_changed · system_changed · history_rewritten ·
            idle_expired (the gap exceeded the cache lifetime) · provider_miss (the prefix was
            unchanged and recent, yet the provider did not reuse it)
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from orchestrator.llm.usage import Usage, cache_reported

HIT_FRACTION = 0.8
UNREPORTED_DETAIL = "not reported by this provider: it does not say how many prompt tokens came from its cache"


def canonical(value: Any) -> bytes:
    """The one encoding of a prompt segment: its hash, its token estimate and its stored blob all come
    from these bytes, so each segment is serialised once per call."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def encode_segments(model: str, settings: dict[str, Any], tools: list[dict[str, Any]],
                    messages: list[dict[str, Any]]) -> list[bytes]:
    """`canonical()` of each segment, in order: model with its settings, tools, each message."""
    contents: list[Any] = [{"model": model, **settings}, tools, *messages]
    return [canonical(content) for content in contents]


def _digest(value: Any) -> str:
    return hashlib.sha256(canonical(value)).hexdigest()[:16]


def prompt_segments(model: str, settings: dict[str, Any], tools: list[dict[str, Any]],
                    messages: list[dict[str, Any]], encoded: list[bytes] | None = None) -> list[dict[str, Any]]:
    """The call's segments. `encoded` is `encode_segments()` of the same call when the caller already
    made it (to store the segments); else it is made here."""
    if encoded is None:
        encoded = encode_segments(model, settings, tools, messages)
    hashes = [hashlib.sha256(data).hexdigest()[:16] for data in encoded]
    tokens = [max(1, len(data) // 4) for data in encoded]  # ASCII (JSON escapes the rest): bytes are characters
    segments = [{"name": "model", "hash": hashes[0], "tokens": 0}]
    segments.append({"name": "tools", "hash": hashes[1], "tokens": tokens[1],
                     "items": [{"name": tool["function"]["name"], "hash": _digest(tool)} for tool in tools]})
    for index, message in enumerate(messages):
        is_system = index == 0 and message.get("role") == "system"
        name = "system" if is_system else f"message {index} ({message.get('role')})"
        segments.append({"name": name, "hash": hashes[index + 2], "tokens": tokens[index + 2]})
    return segments


def _first_difference(previous: list[dict[str, Any]], current: list[dict[str, Any]]) -> int | None:
    """Index of the first segment of `previous` that `current` does not repeat; None if previous is a prefix."""
    for index, segment in enumerate(previous):
        if index >= len(current) or current[index]["hash"] != segment["hash"]:
            return index
    return None


def _tools_detail(previous: dict[str, Any], current: dict[str, Any]) -> str:
    before = {item["name"]: item["hash"] for item in previous.get("items", [])}
    after = {item["name"]: item["hash"] for item in current.get("items", [])}
    changes = [f"{name} schema" for name in after if name in before and before[name] != after[name]]
    changes += [f"{name} added" for name in after if name not in before]
    changes += [f"{name} removed" for name in before if name not in after]
    if not changes and list(before) != list(after):
        changes.append("order changed")
    return "tools changed: " + ", ".join(changes or ["serialisation"])


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f}m" if seconds >= 90 else f"{seconds:.0f}s"


def diagnose(current: list[dict[str, Any]], usage: Usage, *, previous: list[dict[str, Any]] | None,
             previous_ended_at: datetime | None, started_at: datetime, cache_lifetime_seconds: float) -> dict[str, Any]:
    total_estimate = sum(segment["tokens"] for segment in current) or 1
    changed_at = _first_difference(previous, current) if previous is not None else 0
    shared = len(previous) if previous is not None and changed_at is None else (changed_at or 0)
    shared_estimate = sum(segment["tokens"] for segment in current[:shared])
    expected_cached = round(usage.input_total * shared_estimate / total_estimate) if usage.input_total else 0
    reported = cache_reported(usage)
    hit_rate = round(usage.cache_read / usage.input_total, 4) if usage.input_total and reported else None

    if not reported:
        status = "unreported"
    elif usage.cache_read == 0:
        status = "cold" if previous is None else "miss"
    elif usage.cache_read >= HIT_FRACTION * expected_cached:
        status = "hit"
    else:
        status = "partial"

    cause = detail = None
    first_changed = None
    if status != "hit":
        if previous is None and reported:
            cause, detail = "cold_start", "first call of the session: nothing to reuse yet"
        elif previous is None:  # the server may hold this prefix from elsewhere (a warm-up, another session)
            detail = UNREPORTED_DETAIL
        elif changed_at is not None:
            first_changed = previous[changed_at]["name"]
            if first_changed == "model":
                cause, detail = "model_changed", "model or request settings changed"
            elif first_changed == "tools":
                cause, detail = "tools_changed", _tools_detail(previous[changed_at], current[changed_at])
            elif first_changed == "system":
                cause, detail = "system_changed", "system prompt changed"
            else:
                cause, detail = "history_rewritten", f"{first_changed} differs from what the previous call sent"
        elif not reported:
            detail = UNREPORTED_DETAIL
        else:
            idle = (started_at - previous_ended_at).total_seconds() if previous_ended_at else 0.0
            if idle > cache_lifetime_seconds:
                cause = "idle_expired"
                detail = f"idle {_duration(idle)} > cache lifetime {_duration(cache_lifetime_seconds)}"
            else:
                cause = "provider_miss"
                detail = "the prefix was unchanged and recent, but the provider did not reuse it"
    return {"status": status, "cause": cause, "detail": detail, "first_changed_segment": first_changed,
            "shared_segments": shared, "expected_cached_tokens": expected_cached, "hit_rate": hit_rate}
