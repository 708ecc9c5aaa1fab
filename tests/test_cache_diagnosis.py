"""Cache diagnosis: which prompt segment broke the cached prefix, and why a call missed."""

from datetime import datetime, timedelta, timezone

from orchestrator.llm.usage import normalize_usage
from orchestrator.tools.registry import tool_schemas
from orchestrator.tracing.cache import diagnose, prompt_segments

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
HISTORY = [{"role": "system", "content": "You are BooCode." * 50}, {"role": "user", "content": "fix the bug " * 200},
           {"role": "assistant", "content": "done " * 100}]


def reported(prompt: int, cached: int = 0):  # type: ignore[no-untyped-def]
    """Usage from a provider that says how many prompt tokens it read from its cache (here: `cached`)."""
    return normalize_usage({"prompt_tokens": prompt, "prompt_tokens_details": {"cached_tokens": cached}})


def segments(tools=None, messages=None, model="gpt-4o"):  # type: ignore[no-untyped-def]
    return prompt_segments(model, {}, tool_schemas() if tools is None else tools, messages or HISTORY)


def test_first_call_is_cold() -> None:
    result = diagnose(segments(), reported(1000), previous=None, previous_ended_at=None,
                      started_at=NOW, cache_lifetime_seconds=300)
    assert (result["status"], result["cause"]) == ("cold", "cold_start")


def test_an_appended_turn_hits() -> None:
    longer = HISTORY + [{"role": "user", "content": "and now the tests"}]
    result = diagnose(segments(messages=longer), normalize_usage({"prompt_tokens": 1200,
                                                                  "prompt_tokens_details": {"cached_tokens": 1150}}),
                      previous=segments(), previous_ended_at=NOW, started_at=NOW + timedelta(seconds=5),
                      cache_lifetime_seconds=300)
    assert result["status"] == "hit" and result["cause"] is None and result["shared_segments"] == 5


def test_changed_tools_are_named() -> None:
    tools = tool_schemas()
    changed = [dict(tool) for tool in tools]
    changed[0] = {"type": "function", "function": {**tools[0]["function"], "description": "different"}}
    result = diagnose(segments(tools=changed), reported(1200), previous=segments(),
                      previous_ended_at=NOW, started_at=NOW, cache_lifetime_seconds=300)
    assert (result["status"], result["cause"]) == ("miss", "tools_changed")
    assert result["detail"] == "tools changed: read_file schema"
    fewer = diagnose(segments(tools=tools[1:]), reported(1200), previous=segments(),
                     previous_ended_at=NOW, started_at=NOW, cache_lifetime_seconds=300)
    assert fewer["detail"] == "tools changed: read_file removed"


def test_changed_system_prompt() -> None:
    rewritten = [{"role": "system", "content": "Today is Tuesday. You are BooCode."}] + HISTORY[1:]
    result = diagnose(segments(messages=rewritten), reported(1200), previous=segments(),
                      previous_ended_at=NOW, started_at=NOW, cache_lifetime_seconds=300)
    assert (result["cause"], result["first_changed_segment"]) == ("system_changed", "system")


def test_rewritten_history() -> None:
    rewritten = HISTORY[:2] + [{"role": "assistant", "content": "(summarised)"}]
    result = diagnose(segments(messages=rewritten), normalize_usage({"prompt_tokens": 1200,
                                                                     "prompt_tokens_details": {"cached_tokens": 300}}),
                      previous=segments(), previous_ended_at=NOW, started_at=NOW, cache_lifetime_seconds=300)
    assert result["status"] == "partial" and result["cause"] == "history_rewritten"
    assert result["first_changed_segment"] == "message 2 (assistant)"


def test_model_change_and_idle_expiry_and_provider_miss() -> None:
    model = diagnose(segments(model="gpt-4o-mini"), reported(900), previous=segments(),
                     previous_ended_at=NOW, started_at=NOW, cache_lifetime_seconds=300)
    assert model["cause"] == "model_changed"
    idle = diagnose(segments(), reported(900), previous=segments(), previous_ended_at=NOW,
                    started_at=NOW + timedelta(minutes=7), cache_lifetime_seconds=300)
    assert (idle["cause"], idle["detail"]) == ("idle_expired", "idle 7m > cache lifetime 5m")
    provider = diagnose(segments(), reported(900), previous=segments(),
                        previous_ended_at=NOW, started_at=NOW + timedelta(seconds=20), cache_lifetime_seconds=300)
    assert provider["cause"] == "provider_miss"


def test_a_provider_that_does_not_report_cached_tokens_is_unreported_never_a_miss() -> None:
    """llama-cpp-python's server sends only prompt/completion/total tokens, even when it reused the prefix."""
    llama = normalize_usage({"prompt_tokens": 1275, "completion_tokens": 9, "total_tokens": 1284})
    assert "cache_not_reported" in llama.flags and llama.cache_read == 0 and llama.input_total == 1275
    first = diagnose(segments(), llama, previous=None, previous_ended_at=None, started_at=NOW,
                     cache_lifetime_seconds=300)
    assert (first["status"], first["cause"], first["hit_rate"]) == ("unreported", None, None)
    assert "not reported by this provider" in first["detail"]
    longer = HISTORY + [{"role": "user", "content": "and now the tests"}]
    unchanged = diagnose(segments(messages=longer), llama, previous=segments(), previous_ended_at=NOW,
                         started_at=NOW + timedelta(seconds=20), cache_lifetime_seconds=300)
    assert (unchanged["status"], unchanged["cause"], unchanged["hit_rate"]) == ("unreported", None, None)
    assert unchanged["shared_segments"] == 5 and "not reported by this provider" in unchanged["detail"]
    # what is known here is still said: a changed system prompt breaks any provider's cached prefix
    rewritten = [{"role": "system", "content": "Today is Tuesday."}] + HISTORY[1:]
    changed = diagnose(segments(messages=rewritten), llama, previous=segments(), previous_ended_at=NOW,
                       started_at=NOW, cache_lifetime_seconds=300)
    assert (changed["status"], changed["cause"]) == ("unreported", "system_changed")
    missing = diagnose(segments(), normalize_usage(None), previous=segments(), previous_ended_at=NOW,
                       started_at=NOW, cache_lifetime_seconds=300)
    assert missing["status"] == "unreported"


def test_a_reported_zero_is_still_a_miss() -> None:
    for usage in (reported(900), normalize_usage({"prompt_tokens": 900, "prompt_cache_hit_tokens": 0,
                                                  "prompt_cache_miss_tokens": 900}),
                  normalize_usage({"input_tokens": 900, "cache_read_input_tokens": 0})):
        assert "cache_not_reported" not in usage.flags
        result = diagnose(segments(), usage, previous=segments(), previous_ended_at=NOW,
                          started_at=NOW + timedelta(seconds=20), cache_lifetime_seconds=300)
        assert (result["status"], result["cause"], result["hit_rate"]) == ("miss", "provider_miss", 0.0)
