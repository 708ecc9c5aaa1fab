"""Usage normalisation from recorded provider usage blocks, and pricing."""

from orchestrator.llm.prices import Price, compute_cost
from orchestrator.llm.usage import normalize_usage


def test_openai_cached_tokens_are_a_subset_of_prompt_tokens() -> None:
    raw = {"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
           "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": 64}}
    usage = normalize_usage(raw)
    assert (usage.input_total, usage.uncached, usage.cache_read, usage.cache_write, usage.output, usage.reasoning) \
        == (2006, 86, 1920, 0, 300, 64)
    assert usage.raw == raw and usage.flags == ()


def test_openai_cache_writes_are_counted_separately() -> None:
    usage = normalize_usage({"prompt_tokens": 5000, "completion_tokens": 10,
                             "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 3000}})
    assert (usage.input_total, usage.uncached, usage.cache_read, usage.cache_write) == (5000, 1000, 1000, 3000)


def test_deepseek_hit_and_miss_fields() -> None:
    usage = normalize_usage({"prompt_tokens": 1500, "completion_tokens": 42, "prompt_cache_hit_tokens": 1280,
                             "prompt_cache_miss_tokens": 220})
    assert (usage.input_total, usage.uncached, usage.cache_read, usage.output) == (1500, 220, 1280, 42)
    inconsistent = normalize_usage({"prompt_tokens": 100, "prompt_cache_hit_tokens": 10,
                                    "prompt_cache_miss_tokens": 50})
    assert "hit_plus_miss_differs_from_prompt_tokens" in inconsistent.flags


def test_anthropic_style_input_excludes_the_cache() -> None:
    usage = normalize_usage({"input_tokens": 50, "output_tokens": 20, "cache_read_input_tokens": 10000,
                             "cache_creation_input_tokens": 2000})
    assert (usage.input_total, usage.uncached, usage.cache_read, usage.cache_write) == (12050, 50, 10000, 2000)
    by_ttl = normalize_usage({"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 0,
                              "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 50}})
    assert by_ttl.cache_write == 150 and by_ttl.input_total == 155


def test_negative_uncached_is_clamped_and_flagged() -> None:
    usage = normalize_usage({"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 150}})
    assert usage.uncached == 0 and "uncached_clamped_at_zero" in usage.flags


def test_missing_usage_is_flagged_not_invented() -> None:
    usage = normalize_usage(None)
    assert usage.input_total == 0 and usage.flags == ("no_usage_reported",)


def test_cost_prices_cache_reads_and_writes_separately() -> None:
    usage = normalize_usage({"input_tokens": 1_000_000, "output_tokens": 1_000_000,
                             "cache_read_input_tokens": 1_000_000, "cache_creation_input_tokens": 1_000_000})
    cost = compute_cost(usage, Price(input=3.0, output=15.0, cache_read=0.30, cache_write=3.75))
    assert cost["input"] == 3.0 and cost["cache_read"] == 0.30 and cost["cache_write"] == 3.75
    assert cost["total"] == 22.05 and cost["priced"] is True
    assert compute_cost(usage, None)["priced"] is False
