"""Calling a model through the official `openai` client, against any OpenAI-compatible endpoint.

    complete(messages, tools) -> ModelResult, never raises for model trouble:
        for attempt in 1..max_attempts:
            stream the chat completion with usage requested in the stream
            text and tool-call deltas go to `on_delta` as they arrive (tagged with the attempt)
            429 / 5xx / connection errors: wait `retry-after` (or back off), try again
            a timeout: try again only if the provider allows it (`retry_on_timeout`)
            other 4xx: stop at once
        success -> text, tool calls, finish reason, normalised usage, time to first token, latency
        failure -> the same shape with finish_reason "error" and an `error` {code, status, message}

The client's own retries are off so that every attempt is visible to us (and to the trace).

Why a timeout is not always retried: a llama.cpp server (the embedded model) computes one request at a
time. A request we gave up on is not dropped by llama-cpp-python's server once it is being computed (a
non-streamed one runs to its end; a streamed one stops at its next token), so a retry only queues behind
it and times out in turn. `boocode up` turns `retry_on_timeout` off when it serves the local model
(docs/local-model.md, "Timeouts and cancelling").
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import openai

from orchestrator.llm import jsontools
from orchestrator.llm.provider import Provider  # noqa: F401 - re-exported: callers build clients with it
from orchestrator.llm.usage import Usage, normalize_usage

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER_SECONDS = 60.0


@dataclass
class ToolCallRequest:
    id: str
    name: str
    arguments: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass
class ModelResult:
    text: str = ""
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    attempts: int = 0
    time_to_first_token_ms: float | None = None
    latency_ms: float = 0.0
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "tool_calls": [call.to_dict() for call in self.tool_calls],
                "finish_reason": self.finish_reason, "usage": self.usage.to_dict(), "model": self.model,
                "attempts": self.attempts, "time_to_first_token_ms": self.time_to_first_token_ms,
                "latency_ms": self.latency_ms, "error": self.error}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelResult":
        return cls(text=data["text"], tool_calls=[ToolCallRequest(**call) for call in data["tool_calls"]],
                   finish_reason=data["finish_reason"], usage=Usage.from_dict(data["usage"]), model=data["model"],
                   attempts=data["attempts"], time_to_first_token_ms=data["time_to_first_token_ms"],
                   latency_ms=data["latency_ms"], error=data["error"])


class StopRequested(Exception):
    """Raised by `should_stop` callers' checks to abandon a stream (cancellation, lost lease)."""


def retry_delay(error: Exception, attempt: int) -> float:
    """Seconds to wait: the server's `retry-after` when it sent one, else exponential back-off."""
    response = getattr(error, "response", None)
    header = response.headers.get("retry-after") if response is not None else None
    if header:
        try:
            return min(max(float(header), 0.0), MAX_RETRY_AFTER_SECONDS)
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(header)
            if parsed is not None:
                return min(max(parsed.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER_SECONDS)
    return min(0.5 * 2 ** (attempt - 1), 8.0)


def is_retryable(error: Exception, *, retry_on_timeout: bool = True) -> bool:
    if isinstance(error, openai.APITimeoutError):  # a subclass of APIConnectionError: decide it first
        return retry_on_timeout
    if isinstance(error, (openai.APIConnectionError, openai.RateLimitError)):
        return True
    return isinstance(error, openai.APIStatusError) and (error.status_code >= 500 or error.status_code == 408)


def error_code(error: Exception) -> str:
    """`model_timeout` (no answer in time), `model_unavailable` (worth trying later), `model_rejected`."""
    if isinstance(error, openai.APITimeoutError):
        return "model_timeout"
    return "model_unavailable" if is_retryable(error) else "model_rejected"


class ModelClient:
    def __init__(self, provider: Provider, *, max_attempts: int = 4, timeout: float = 120.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.provider = provider
        self.max_attempts = max_attempts
        self.timeout = timeout
        self._sleep = sleep
        self._client = openai.OpenAI(base_url=provider.base_url, api_key=provider.api_key or "not-needed",
                                     max_retries=0, timeout=timeout)

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *,
                 on_delta: Callable[[dict[str, Any]], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 options: dict[str, Any] | None = None, require_tool: bool = False) -> ModelResult:
        """`options`: extra request fields, e.g. {"reasoning_effort": "high"}. `require_tool`: in json tool
        mode, the reply must be a tool call."""
        started = time.monotonic()
        last_error: Exception | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                if self.provider.tool_mode == "json" and tools:
                    result = self._json_once(messages, tools, attempt, on_delta, should_stop, options or {},
                                             require_tool)
                else:
                    result = self._stream_once(messages, tools, attempt, on_delta, should_stop, options or {})
                result.attempts = attempt
                result.latency_ms = round((time.monotonic() - started) * 1000, 1)
                return result
            except StopRequested:
                raise
            except openai.APIError as error:
                last_error = error
                if not is_retryable(error, retry_on_timeout=self.provider.retry_on_timeout) \
                        or attempt == self.max_attempts:
                    break
                delay = retry_delay(error, attempt)
                logger.warning("model call failed; retrying", extra={"attempt": attempt, "delay": delay,
                                                                     "status": getattr(error, "status_code", None)})
                self._sleep(delay)
        assert last_error is not None
        status = getattr(last_error, "status_code", None)
        return ModelResult(finish_reason="error", model=self.provider.model, attempts=attempt,
                           latency_ms=round((time.monotonic() - started) * 1000, 1),
                           error={"code": error_code(last_error), "status": status,
                                  "exception": type(last_error).__name__,
                                  "message": _error_message(last_error, attempt, self.timeout)})

    def _stream_once(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], attempt: int,
                     on_delta: Callable[[dict[str, Any]], None] | None,
                     should_stop: Callable[[], bool] | None, options: dict[str, Any]) -> ModelResult:
        started = time.monotonic()
        request = {**self._request(messages, options), "stream": True, "stream_options": {"include_usage": True}}
        if tools:
            request["tools"] = tools
        stream = self._create(request)
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        finish_reason = "stop"
        usage_raw: dict[str, Any] | None = None
        first_token_ms: float | None = None
        model = self.provider.model
        try:
            for chunk in stream:
                if should_stop is not None and should_stop():
                    raise StopRequested()
                model = chunk.model or model
                if chunk.usage is not None:
                    usage_raw = chunk.usage.model_dump(exclude_none=True)
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta.content:
                        if first_token_ms is None:
                            first_token_ms = round((time.monotonic() - started) * 1000, 1)
                        text.append(delta.content)
                        if on_delta:
                            on_delta({"kind": "text", "text": delta.content, "attempt": attempt})
                    for call in delta.tool_calls or []:
                        if first_token_ms is None:
                            first_token_ms = round((time.monotonic() - started) * 1000, 1)
                        slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                        if call.id:
                            slot["id"] = call.id
                        if call.function and call.function.name:
                            slot["name"] += call.function.name
                        if call.function and call.function.arguments:
                            slot["arguments"] += call.function.arguments
                        if on_delta:
                            on_delta({"kind": "tool_call", "index": call.index, "id": slot["id"],
                                      "name": slot["name"], "arguments": call.function.arguments
                                      if call.function and call.function.arguments else "", "attempt": attempt})
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
        finally:
            stream.close()
        tool_calls = [ToolCallRequest(id=slot["id"] or f"call_{index}", name=slot["name"], arguments=slot["arguments"])
                      for index, slot in sorted(calls.items())]
        return ModelResult(text="".join(text), tool_calls=tool_calls, finish_reason=finish_reason,
                           usage=normalize_usage(usage_raw), model=model, time_to_first_token_ms=first_token_ms)


    def _create(self, request: dict[str, Any]) -> Any:
        """Send a chat completion. The client walks every parameter through its typed definitions before
        sending (about 40 ms for a prompt of 60 messages: more than the rest of a turn's orchestration);
        our messages and tools are plain JSON already, so they go as `extra_body`, which it sends as
        they are (and which takes precedence over the empty `messages` the signature requires)."""
        plain = {key: request.pop(key) for key in ("messages", "tools") if key in request}
        return self._client.chat.completions.create(**request, messages=[], extra_body=plain)

    def _request(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> dict[str, Any]:
        """What every request carries: the caller's extra fields, the model, the messages, the temperature."""
        request = {**options, "model": self.provider.model, "messages": messages}
        if self.provider.temperature is not None:
            request["temperature"] = self.provider.temperature
        return request

    def _json_once(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], attempt: int,
                   on_delta: Callable[[dict[str, Any]], None] | None, should_stop: Callable[[], bool] | None,
                   options: dict[str, Any], require_tool: bool) -> ModelResult:
        """One call in json tool mode: the reply streams as JSON (not shown), then becomes a call or an answer."""
        rewritten, response_format = jsontools.prepare(messages, tools, require_tool)
        request = {**self._request(rewritten, options), "response_format": response_format}
        if should_stop is not None and should_stop():
            raise StopRequested()
        started = time.monotonic()
        # Not streamed: the JSON is not shown as it comes, and llama.cpp reports usage only this way.
        response = self._create(request)
        choice = response.choices[0] if response.choices else None
        raw = ModelResult(text=(choice.message.content or "") if choice else "",
                          finish_reason=(choice.finish_reason or "stop") if choice else "stop",
                          usage=normalize_usage(response.usage.model_dump(exclude_none=True) if response.usage
                                                else None),
                          model=response.model or self.provider.model,
                          time_to_first_token_ms=round((time.monotonic() - started) * 1000, 1))
        text, call, problem = jsontools.parse(raw.text, {tool["function"]["name"] for tool in tools})
        raw.text, raw.tool_calls = text, []
        if problem is not None:
            raw.finish_reason = "error"
            raw.error = {"code": "model_invalid_output", "message": f"the model's reply could not be used: {problem}",
                         "reply": raw.text[:2000]}
            return raw
        if call is not None:
            call_id = "call_" + hashlib.sha256("\0".join(call).encode()).hexdigest()[:16]
            raw.tool_calls = [ToolCallRequest(id=call_id, name=call[0], arguments=call[1])]
            raw.finish_reason = "tool_calls"
            if on_delta:
                on_delta({"kind": "tool_call", "index": 0, "id": raw.tool_calls[0].id, "name": call[0],
                          "arguments": call[1], "attempt": attempt})
        elif on_delta and text:
            on_delta({"kind": "text", "text": text, "attempt": attempt})
        return raw


def _error_message(error: Exception, attempts: int, timeout: float) -> str:
    tries = f"(after {attempts} attempt{'s' if attempts != 1 else ''})"
    if isinstance(error, openai.APITimeoutError):
        return (f"the model did not answer within {timeout:g}s {tries}; a small model on a busy CPU can need "
                "longer: raise BOOCODE_MODEL_TIMEOUT_SECONDS for the worker (or use a faster model)")
    status = getattr(error, "status_code", None)
    body = getattr(error, "body", None)
    detail = body.get("message") if isinstance(body, dict) else None
    detail = detail or str(error)
    prefix = f"HTTP {status}: " if status else ""
    return f"{prefix}{detail} {tries}"
