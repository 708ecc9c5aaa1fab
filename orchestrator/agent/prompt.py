"""Building the model request from stored messages, cache-friendly by construction.

The prefix stays byte-stable between calls: the system prompt names only the project (never a
time or anything per-turn), tool schemas come in the registry's fixed order, and history is
append-only (messages are rendered exactly as stored; nothing is summarised or rewritten).
"""

from __future__ import annotations

from typing import Any

from orchestrator.store.sessions import Said

SYSTEM_PROMPT = """You are BooCode, a coding agent working in the project "{name}" (root: {root}).
Use the tools to read, search, edit and run things inside the project; paths are relative to the root.
Prefer small, exact edits. When the task is done, answer with a short summary of what you did."""


def system_prompt(project_name: str, root: str) -> str:
    return SYSTEM_PROMPT.format(name=project_name, root=root)


def image_digests(history: list[Said]) -> list[str]:
    return [part["blob"] for message in history for part in message.parts if part["type"] == "image"]


def render_messages(system: str, history: list[Said], images: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """`images` maps blob digests to data URLs for the image parts in `history`."""
    rendered: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for message in history:
        parts = message.parts
        if message.role == "user":
            texts = [part["text"] for part in parts if part["type"] == "text"]
            pictures = [part["blob"] for part in parts if part["type"] == "image"]
            if pictures:
                content: Any = [{"type": "text", "text": "\n\n".join(texts)}] if texts else []
                content += [{"type": "image_url", "image_url": {"url": (images or {})[digest]}} for digest in pictures]
            else:
                content = "\n\n".join(texts)
            rendered.append({"role": "user", "content": content})
        elif message.role == "assistant":
            texts = [part["text"] for part in parts if part["type"] == "text"]
            calls = [{"id": part["id"], "type": "function",
                      "function": {"name": part["name"], "arguments": part["arguments"]}}
                     for part in parts if part["type"] == "tool_call"]
            if not texts and not calls:
                continue  # a failed model call: nothing the model said
            entry: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
            if calls:
                entry["tool_calls"] = calls
            rendered.append(entry)
        elif message.role == "tool":
            for part in parts:
                if part["type"] == "tool_result":
                    rendered.append({"role": "tool", "tool_call_id": part["tool_call_id"],
                                     "content": part["content"]})
    return rendered
