"""Warming the local model's prompt cache at start-up, so the first chat turn does not read ~1,100 tokens.

    first_turn_request(model)      what a chat agent's first model call sends, in json tool mode, up to
                                   the project: the tool rules and catalogue, then the system prompt
    warm_up(base_url, model, ...)  POST it with max_tokens=1; llama.cpp keeps the computed prefix in its
                                   KV cache and the next request sharing it reads only the rest

llama.cpp keeps one prompt's state, the last one, and reuses its longest common prefix with the next
request ("prefix-match hit" in its log). In json mode the rules and tool catalogue come first
(orchestrator.llm.jsontools), so they are the same for every project; only the project's name and root
that follow differ. Warming is an optimisation: any failure is reported and changes nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from orchestrator.agent.prompt import system_prompt
from orchestrator.llm import jsontools
from orchestrator.tools.registry import TOOLS, tool_schemas


@dataclass(frozen=True)
class WarmUp:
    prompt_tokens: int | None
    seconds: float


def first_turn_request(model: str, temperature: float | None = 0.0) -> dict[str, Any]:
    """A chat agent's first call (all tools, a tool call required), for a placeholder project."""
    messages = [{"role": "system", "content": system_prompt("…", "…")}, {"role": "user", "content": "Hello."}]
    rewritten, response_format = jsontools.prepare(messages, tool_schemas(list(TOOLS)), require_tool=True)
    request: dict[str, Any] = {"model": model, "messages": rewritten, "response_format": response_format,
                               "max_tokens": 1}
    if temperature is not None:
        request["temperature"] = temperature
    return request


def warm_up(base_url: str, model: str, *, timeout: float, temperature: float | None = 0.0) -> WarmUp:
    """One request whose prefix is the first turn's; raises httpx.HTTPError when the server fails it."""
    started = time.monotonic()
    response = httpx.post(f"{base_url.rstrip('/')}/chat/completions", json=first_turn_request(model, temperature),
                          timeout=timeout)
    response.raise_for_status()
    usage = response.json().get("usage") or {}
    return WarmUp(prompt_tokens=usage.get("prompt_tokens"), seconds=round(time.monotonic() - started, 1))
