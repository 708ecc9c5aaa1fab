"""Cache diagnosis: which prompt segment broke the cached prefix, and why a call missed."""

from datetime import datetime, timedelta, timezone

from orchestrator.llm.usage import normalize_usage
from orchestrator.tools.registry import tool_schemas
from orchestrator.tracing.cache import diagnose, prompt_segments

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
HISTORY = [{"role": "system", "content": "You are BooCode." * 50}, {"role": "user", "content": "fix the bug " * 200},
           {"role": "assistant", "content": "done " * 100}]


def segments(tools=None, messages=None, model="gpt-4o"):  # type: ignore[no-untyped-def]
    return prompt_segments(model, {}, tool_schemas() if tools is None else tools, messages or HISTORY)


def test_first_call_is_cold() -> None:
    result = diagnose(segments(), normalize_usage({"prompt_tokens": 1000}), previous=None, previous_ended_at=None,
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
    result = diagnose(segments(tools=changed), normalize_usage({"prompt_tokens": 1200}), previous=segments(),
                      previous_ended_at=NOW, started_at=NOW, cache_lifetime_seconds=300)
    assert (result["status"], result["cause"]) == ("miss", "tools_changed")
    assert result["detail"] == "tools changed: read_file schema"
    fewer = diagnose(segments(tools=tools[1:]), normalize_usage({"prompt_tokens": 1200}), previous=segments(),
                     previous_ended_at=NOW, started_at=NOW, cache_lifetime_seconds=300)
    assert fewer["detail"] == "tools changed: read_file removed"


def test_changed_system_prompt() -> None:
    rewritten = [{"role": "system", "content": "Today is Tuesday. You are BooCode."}] + HISTORY[1:]
    result = diagnose(segments(messages=rewritten), normalize_usage({"prompt_tokens": 1200}), previous=segments(),
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
    model = diagnose(segments(model="gpt-4o-mini"), normalize_usage({"prompt_tokens": 900}), previous=segments(),
                     previous_ended_at=NOW, started_at=NOW, cache_lifetime_seconds=300)
    assert model["cause"] == "model_changed"
    idle = diagnose(segments(), normalize_usage({"prompt_tokens": 900}), previous=segments(), previous_ended_at=NOW,
                    started_at=NOW + timedelta(minutes=7), cache_lifetime_seconds=300)
    assert (idle["cause"], idle["detail"]) == ("idle_expired", "idle 7m > cache lifetime 5m")
    provider = diagnose(segments(), normalize_usage({"prompt_tokens": 900}), previous=segments(),
                        previous_ended_at=NOW, started_at=NOW + timedelta(seconds=20), cache_lifetime_seconds=300)
    assert provider["cause"] == "provider_miss"
