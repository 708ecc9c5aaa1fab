"""Tool calls for models that cannot make them natively: every reply constrained to one JSON object.

Small local models rarely produce native tool-call syntax. For a provider in `json` tool mode the
request carries no `tools`; instead the system prompt lists the tools with their argument schemas and
`response_format` constrains the reply (llama.cpp turns the schema into a grammar) to exactly one of

    {"tool": "<name>", "arguments": {...that tool's arguments...}}
    {"final": "<the answer>"}                      (left out when a tool call is required)

Earlier tool calls and results are rendered in the same shape, so the model sees its own convention.
The reply is parsed back into a native-looking tool call or a text answer, so the rest of the agent
runtime does not know the difference.
"""

from __future__ import annotations

import json
from typing import Any

# The same words whether or not this call must use a tool (the grammar enforces that), so the prompt's
# prefix stays byte-stable from call to call and the server can reuse what it computed for it.
INSTRUCTIONS = """You act by replying with exactly one JSON object and nothing else.
To use a tool: {{"tool": "<tool name>", "arguments": {{...}}}}
When you have what you need, answer the user: {{"final": "<your answer>"}}
Tools:
{catalogue}"""


def response_schema(tools: list[dict[str, Any]], require_tool: bool) -> dict[str, Any]:
    variants: list[dict[str, Any]] = [
        {"type": "object", "properties": {"tool": {"const": tool["function"]["name"]},
                                          "arguments": _grammar_friendly(tool["function"]["parameters"])},
         "required": ["tool", "arguments"], "additionalProperties": False}
        for tool in tools]
    if not require_tool or not variants:
        variants.append({"type": "object", "properties": {"final": {"type": "string"}}, "required": ["final"],
                         "additionalProperties": False})
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def _grammar_friendly(schema: dict[str, Any]) -> dict[str, Any]:
    """The argument schema without the parts that only describe (descriptions make no grammar)."""
    if not isinstance(schema, dict):
        return schema
    cleaned: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "description":
            continue
        if key == "properties" and isinstance(value, dict):
            cleaned[key] = {name: _grammar_friendly(inner) for name, inner in value.items()}
        elif key == "items" and isinstance(value, dict):
            cleaned[key] = _grammar_friendly(value)
        else:
            cleaned[key] = value
    return cleaned


def prepare(messages: list[dict[str, Any]], tools: list[dict[str, Any]],
            require_tool: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The request's messages rewritten for JSON mode, and its `response_format`."""
    catalogue = "\n".join(f"- {tool['function']['name']}: {tool['function']['description']} Arguments (JSON Schema): "
                          f"{json.dumps(_grammar_friendly(tool['function']['parameters']), sort_keys=True)}"
                          for tool in tools) or "(none)"
    rules = INSTRUCTIONS.format(catalogue=catalogue)
    names: dict[str, str] = {}
    rewritten: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        if role == "system":
            # The rules and tool list first: they are the same for every project, so the prefix a server
            # computed once (at start-up, orchestrator.localmodel.warmup) serves every project's first turn.
            rewritten.append({"role": "system", "content": f"{rules}\n\n{message['content']}"})
        elif role == "assistant":
            calls = message.get("tool_calls") or []
            for call in calls:
                names[call["id"]] = call["function"]["name"]
            if calls:
                call = calls[0]["function"]
                rewritten.append({"role": "assistant", "content": json.dumps(
                    {"tool": call["name"], "arguments": _loads(call["arguments"])})})
            else:
                rewritten.append({"role": "assistant", "content": json.dumps({"final": message.get("content") or ""})})
        elif role == "tool":
            name = names.get(message.get("tool_call_id", ""), "the tool")
            rewritten.append({"role": "user", "content": f"Result of {name}:\n{message['content']}"})
        else:
            rewritten.append(message)
    if not messages or messages[0]["role"] != "system":
        rewritten.insert(0, {"role": "system", "content": rules})
    return rewritten, {"type": "json_object", "schema": response_schema(tools, require_tool)}


def parse(text: str, tool_names: set[str]) -> tuple[str, tuple[str, str] | None, str | None]:
    """(answer text, (tool name, arguments JSON) or None, problem or None) from a JSON-mode reply."""
    try:
        reply = json.loads(text)
    except json.JSONDecodeError as error:
        return text, None, f"the reply is not one JSON object ({error.msg}); it may have been cut off"
    if isinstance(reply, dict) and isinstance(reply.get("tool"), str):
        if reply["tool"] not in tool_names:
            return "", None, f"the reply calls an unknown tool {reply['tool']!r}"
        return "", (reply["tool"], json.dumps(reply.get("arguments") or {})), None
    if isinstance(reply, dict) and isinstance(reply.get("final"), str):
        return reply["final"], None, None
    return text, None, 'the reply is neither {"tool": …} nor {"final": …}'


def _loads(arguments: str) -> Any:
    try:
        return json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return arguments
