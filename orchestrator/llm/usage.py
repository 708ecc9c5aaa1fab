"""Normalising provider usage into one inclusive shape, keeping the raw object.

    cache_read   = the provider's read field (0 if absent)
    cache_write  = the provider's write field (0 if absent)
    inclusive providers (OpenAI, DeepSeek, vLLM, llama.cpp, Gemini via OpenAI-compat):
        input_total = prompt_tokens;  uncached = input_total - cache_read - cache_write
    exclusive providers (Anthropic-style fields: input_tokens excludes cache):
        uncached = input_tokens;      input_total = uncached + cache_read + cache_write
    uncached is clamped at 0 and the clamp is flagged, never hidden.
    no cache field at all (llama-cpp-python's server, some vLLM set-ups): flagged `cache_not_reported`,
        so that a 0 read is not taken for a miss (the cache diagnosis says "unreported")

See shared/reference/tracing-and-cache.md §3 for where each field comes from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Usage:
    input_total: int = 0
    uncached: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0
    flags: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["flags"] = list(self.flags)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Usage":
        return cls(**{**data, "flags": tuple(data.get("flags", ()))})


CACHE_NOT_REPORTED = "cache_not_reported"
NO_USAGE_REPORTED = "no_usage_reported"
CACHE_FIELDS = ("prompt_cache_hit_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation")


def cache_reported(usage: Usage) -> bool:
    """Whether the provider said how much of the prompt it read from its cache (0 included)."""
    return CACHE_NOT_REPORTED not in usage.flags and NO_USAGE_REPORTED not in usage.flags


def _number(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def normalize_usage(raw: dict[str, Any] | None) -> Usage:
    """One `Usage` from whatever usage block the provider sent (None → all zeros, flagged)."""
    if not raw:
        return Usage(flags=(NO_USAGE_REPORTED,), raw={})
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    flags: list[str] = []
    if not any(key in raw for key in CACHE_FIELDS) and "cached_tokens" not in prompt_details:
        flags.append(CACHE_NOT_REPORTED)

    anthropic_style = any(key in raw for key in ("cache_read_input_tokens", "cache_creation_input_tokens",
                                                 "cache_creation"))
    if anthropic_style:
        # Anthropic-style: input_tokens is only what follows the last cache breakpoint.
        cache_read = _number(raw.get("cache_read_input_tokens"))
        creation = raw.get("cache_creation") or {}
        cache_write = _number(raw.get("cache_creation_input_tokens")) or (
            _number(creation.get("ephemeral_5m_input_tokens")) + _number(creation.get("ephemeral_1h_input_tokens")))
        uncached = _number(raw.get("input_tokens", raw.get("prompt_tokens")))
        if "prompt_tokens" in raw and "input_tokens" not in raw:
            # llama.cpp sends Anthropic-style cache reads beside an inclusive OpenAI prompt count.
            input_total = _number(raw.get("prompt_tokens"))
            uncached = input_total - cache_read - cache_write
        else:
            input_total = uncached + cache_read + cache_write
        output = _number(raw.get("output_tokens", raw.get("completion_tokens")))
    else:
        input_total = _number(raw.get("prompt_tokens", raw.get("input_tokens")))
        if "prompt_cache_hit_tokens" in raw:  # DeepSeek
            cache_read = _number(raw.get("prompt_cache_hit_tokens"))
            miss = raw.get("prompt_cache_miss_tokens")
            if miss is not None and _number(miss) + cache_read != input_total:
                flags.append("hit_plus_miss_differs_from_prompt_tokens")
        else:
            cache_read = _number(prompt_details.get("cached_tokens"))
        cache_write = _number(prompt_details.get("cache_write_tokens"))
        uncached = input_total - cache_read - cache_write
        output = _number(raw.get("completion_tokens", raw.get("output_tokens")))

    if uncached < 0:
        flags.append("uncached_clamped_at_zero")
        uncached = 0
    reasoning = _number(completion_details.get("reasoning_tokens"))
    return Usage(input_total=input_total, uncached=uncached, cache_read=cache_read, cache_write=cache_write,
                 output=output, reasoning=reasoning, flags=tuple(flags), raw=dict(raw))


def add_usage(first: Usage, second: Usage) -> Usage:
    return Usage(input_total=first.input_total + second.input_total, uncached=first.uncached + second.uncached,
                 cache_read=first.cache_read + second.cache_read, cache_write=first.cache_write + second.cache_write,
                 output=first.output + second.output, reasoning=first.reasoning + second.reasoning)
