"""A versioned price table: dollars per million tokens, cache reads and writes priced separately.

Prices change; a recorded cost names the table version it was computed with, so old traces stay
explainable after the table is updated. A model missing from the table costs nothing and says so
(`priced: false`) rather than guessing. Providers may override prices in their configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.llm.usage import Usage

PRICE_TABLE_VERSION = "2026-11-01"


@dataclass(frozen=True)
class Price:
    """Dollars per million tokens."""

    input: float
    output: float
    cache_read: float | None = None  # None: billed as input
    cache_write: float | None = None  # None: billed as input

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Price":
        return cls(input=float(data["input"]), output=float(data["output"]),
                   cache_read=None if data.get("cache_read") is None else float(data["cache_read"]),
                   cache_write=None if data.get("cache_write") is None else float(data["cache_write"]))


# Public list prices at PRICE_TABLE_VERSION. Keys are model names as the provider spells them.
PRICES: dict[str, Price] = {
    "gpt-4o": Price(input=2.50, output=10.00, cache_read=1.25),
    "gpt-4o-mini": Price(input=0.15, output=0.60, cache_read=0.075),
    "gpt-4.1": Price(input=2.00, output=8.00, cache_read=0.50),
    "gpt-4.1-mini": Price(input=0.40, output=1.60, cache_read=0.10),
    "deepseek-chat": Price(input=0.27, output=1.10, cache_read=0.07),
    "deepseek-reasoner": Price(input=0.55, output=2.19, cache_read=0.14),
    "claude-sonnet-4-5": Price(input=3.00, output=15.00, cache_read=0.30, cache_write=3.75),
}


def compute_cost(usage: Usage, price: Price | None) -> dict[str, Any]:
    """Cost in dollars by bucket; `priced` is False when no price is known for the model."""
    if price is None:
        return {"total": 0.0, "input": 0.0, "cache_read": 0.0, "cache_write": 0.0, "output": 0.0, "saved": 0.0,
                "priced": False, "table": PRICE_TABLE_VERSION}
    per_token = 1 / 1_000_000
    parts = {
        "input": usage.uncached * price.input * per_token,
        "cache_read": usage.cache_read * (price.input if price.cache_read is None else price.cache_read) * per_token,
        "cache_write": usage.cache_write * (price.input if price.cache_write is None else price.cache_write)
        * per_token,
        "output": usage.output * price.output * per_token,
    }
    read_price = price.input if price.cache_read is None else price.cache_read
    saved = usage.cache_read * (price.input - read_price) * per_token  # what those tokens would have cost uncached
    return {"total": round(sum(parts.values()), 8), **{key: round(value, 8) for key, value in parts.items()},
            "saved": round(saved, 8), "priced": True, "table": PRICE_TABLE_VERSION}


def price_for(model: str, overrides: dict[str, Price] | None = None) -> Price | None:
    if overrides and model in overrides:
        return overrides[model]
    return PRICES.get(model)
