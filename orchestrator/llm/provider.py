"""A model endpoint: where it is, which model, how it takes tools, what it costs. Plain data, apart from
the client (orchestrator/llm/client.py), so the web front end can read and check providers without
importing the model client."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.llm.prices import Price


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str
    model: str
    api_key: str = field(default="", repr=False)
    context_window: int = 128_000
    vision: bool = False
    prices: dict[str, Price] | None = None
    cache_lifetime_seconds: float = 300.0
    # "native": the endpoint takes `tools` and returns tool calls. "json": it cannot, so each reply is
    # constrained to a JSON tool call or answer (orchestrator.llm.jsontools); small local models need it.
    tool_mode: str = "native"
    require_tool_first: bool = False  # the run's first model call must call a tool (json mode)
    temperature: float | None = None
    # False for a server that computes one request at a time (llama.cpp): a retry after a timeout would
    # queue behind the abandoned request (BOOCODE_MODEL_RETRY_ON_TIMEOUT)
    retry_on_timeout: bool = True
