"""The model client against the fake OpenAI-compatible server: streaming, usage, retries, failures as data."""

from __future__ import annotations

import json

from orchestrator.llm.client import ModelClient, Provider
from tests.fakes.model_server import FakeModelServer, Reply, deepseek_usage, openai_usage


def client(fake: FakeModelServer, sleeps: list[float] | None = None, attempts: int = 4) -> ModelClient:
    recorded = sleeps if sleeps is not None else []
    return ModelClient(Provider(name="fake", base_url=fake.base_url, model="fake-model", api_key="sk-test"),
                       max_attempts=attempts, sleep=recorded.append)


def test_streams_text_and_tool_calls_with_usage(fake: FakeModelServer) -> None:
    fake.script(Reply(text="Let me look.", tool_calls=[("read_file", {"path": "a.txt"}), ("list_dir", {})],
                      usage=openai_usage(1200, 30, cached=1024)))
    deltas: list[dict] = []
    result = client(fake).complete([{"role": "user", "content": "hi"}],
                                   [{"type": "function", "function": {"name": "read_file", "parameters": {}}}],
                                   on_delta=deltas.append)
    assert result.text == "Let me look." and result.finish_reason == "tool_calls" and result.error is None
    assert [(call.name, json.loads(call.arguments)) for call in result.tool_calls] == [
        ("read_file", {"path": "a.txt"}), ("list_dir", {})]
    assert (result.usage.input_total, result.usage.cache_read, result.usage.uncached) == (1200, 1024, 176)
    assert "".join(delta["text"] for delta in deltas if delta["kind"] == "text") == "Let me look."
    assert result.time_to_first_token_ms is not None and result.attempts == 1
    request = fake.requests[0]
    assert request["body"]["stream"] is True and request["body"]["stream_options"] == {"include_usage": True}
    assert request["body"]["tools"][0]["function"]["name"] == "read_file"
    assert request["headers"]["authorization"] == "Bearer sk-test"


def test_deepseek_usage_is_normalised(fake: FakeModelServer) -> None:
    fake.script(Reply(text="ok", usage=deepseek_usage(900, 4, hit=640)))
    usage = client(fake).complete([{"role": "user", "content": "hi"}], []).usage
    assert (usage.input_total, usage.cache_read, usage.uncached, usage.output) == (900, 640, 260, 4)
    assert usage.raw["prompt_cache_hit_tokens"] == 640


def test_retries_honour_retry_after_then_succeed(fake: FakeModelServer) -> None:
    fake.script(Reply(status=429, headers={"retry-after": "7"}), Reply(status=503), Reply(text="finally"))
    sleeps: list[float] = []
    result = client(fake, sleeps).complete([{"role": "user", "content": "hi"}], [])
    assert result.text == "finally" and result.attempts == 3
    assert sleeps[0] == 7.0 and 0 < sleeps[1] <= 8
    assert len(fake.requests) == 3


def test_three_500s_end_as_data_not_an_exception(fake: FakeModelServer) -> None:
    fake.script(Reply(status=500, error_message="upstream exploded"), Reply(status=500), Reply(status=500))
    result = client(fake, attempts=3).complete([{"role": "user", "content": "hi"}], [])
    assert result.finish_reason == "error" and result.attempts == 3
    assert result.error["code"] == "model_unavailable" and result.error["status"] == 500
    assert "after 3 attempts" in result.error["message"]


def test_a_4xx_is_not_retried(fake: FakeModelServer) -> None:
    fake.script(Reply(status=400, error_message="unknown model"))
    result = client(fake).complete([{"role": "user", "content": "hi"}], [])
    assert result.error["code"] == "model_rejected" and "unknown model" in result.error["message"]
    assert len(fake.requests) == 1


TOOLS = [{"type": "function", "function": {"name": "read_file", "description": "Read a file.", "parameters": {
    "type": "object", "properties": {"path": {"type": "string", "description": "where"}}, "required": ["path"]}}},
         {"type": "function", "function": {"name": "list_dir", "description": "List a directory.",
                                           "parameters": {"type": "object", "properties": {}}}}]


def json_client(fake: FakeModelServer) -> ModelClient:
    return ModelClient(Provider(name="local", base_url=fake.base_url, model="local", tool_mode="json", temperature=0.0),
                       max_attempts=1, sleep=lambda seconds: None)


def test_json_tool_mode_constrains_the_reply_and_reads_it_back_as_a_tool_call(fake: FakeModelServer) -> None:
    fake.script(Reply(text='{"tool": "read_file", "arguments": {"path": "a.txt"}}', usage=openai_usage(300, 12)),
                Reply(text='{"final": "It says hello."}', usage=openai_usage(340, 8)))
    history = [{"role": "system", "content": "You are BooCode."}, {"role": "user", "content": "What is in a.txt?"}]
    deltas: list[dict] = []
    first = json_client(fake).complete(history, TOOLS, require_tool=True, on_delta=deltas.append)
    assert first.error is None and first.text == "" and first.finish_reason == "tool_calls"
    assert [(call.name, json.loads(call.arguments)) for call in first.tool_calls] == [("read_file", {"path": "a.txt"})]
    assert first.usage.input_total == 300 and deltas[0]["kind"] == "tool_call"
    body = fake.requests[0]["body"]
    assert "tools" not in body and body["temperature"] == 0.0 and body.get("stream") in (None, False)
    schema = body["response_format"]["schema"]
    assert body["response_format"]["type"] == "json_object"
    assert [variant["properties"]["tool"]["const"] for variant in schema["anyOf"]] == ["read_file", "list_dir"]
    assert "description" not in schema["anyOf"][0]["properties"]["arguments"]["properties"]["path"]
    assert "read_file: Read a file." in body["messages"][0]["content"]

    history += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": first.tool_calls[0].id, "type": "function",
         "function": {"name": "read_file", "arguments": first.tool_calls[0].arguments}}]},
        {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "hello"}]
    second = json_client(fake).complete(history, TOOLS)
    assert second.text == "It says hello." and not second.tool_calls and second.error is None
    body = fake.requests[1]["body"]
    assert any(variant.get("required") == ["final"] for variant in body["response_format"]["schema"]["anyOf"])
    assert body["messages"][2] == {"role": "assistant",
                                   "content": json.dumps({"tool": "read_file", "arguments": {"path": "a.txt"}})}
    assert body["messages"][3] == {"role": "user", "content": "Result of read_file:\nhello"}
    # the system prompt is the same whether or not a tool was required: the server can reuse its prefix
    assert body["messages"][0] == fake.requests[0]["body"]["messages"][0]


def test_json_tool_mode_reports_an_unusable_reply(fake: FakeModelServer) -> None:
    fake.script(Reply(text='{"tool": "rm_rf", "arguments": {}}'), Reply(text='{"path": "a'))
    unknown = json_client(fake).complete([{"role": "user", "content": "go"}], TOOLS)
    assert unknown.error["code"] == "model_invalid_output" and "unknown tool 'rm_rf'" in unknown.error["message"]
    cut = json_client(fake).complete([{"role": "user", "content": "go"}], TOOLS)
    assert cut.error["code"] == "model_invalid_output" and "not one JSON object" in cut.error["message"]
