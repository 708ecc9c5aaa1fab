"""Printing for people (aligned columns) or for scripts (`--json`).

Every command with `--json` ends in `emit(value, as_json, printer)`: the JSON is exactly `value`, and
the human form is `printer(value)`, so the two never drift apart in what they show.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import click


def emit(value: Any, as_json: bool, printer: Callable[[Any], None]) -> None:
    """`value` as JSON for scripts, else as `printer` shows it to a person."""
    if as_json:
        emit_json(value)
    else:
        printer(value)


def table(*columns: str) -> Callable[[Sequence[dict[str, Any]]], None]:
    """A printer for `emit`: the rows as aligned COLUMNS."""
    return lambda rows: emit_table(rows, columns)


def spending_history(history: dict[str, Any] | None, what: str) -> str:
    """An estimate's history of past runs (the server's `spending_history`) as one line."""
    if not history:
        return f"no finished run of this {what} in the project yet to estimate from"
    return (f"the last {history['runs']} finished run(s) here: {history['agents_avg']} agents, "
            f"{history['tokens_avg']} tokens, ${history['cost_avg']:.4f} on average (at most "
            f"${history['cost_max']:.4f})")


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def emit_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[index]) for line in cells)) for index, column in enumerate(columns)]
    click.echo("  ".join(column.upper().ljust(width) for column, width in zip(columns, widths)).rstrip())
    for line in cells:
        click.echo("  ".join(value.ljust(width) for value, width in zip(line, widths)).rstrip())


def emit_record(record: dict[str, Any]) -> None:
    width = max(len(key) for key in record)
    for key, value in record.items():
        click.echo(f"{key.ljust(width)}  {_cell(value, limit=None)}")


MAX_DIFF_LINES = 40
MAX_RESULT_LINES = 6


def render_parts(role: str, parts: list[dict[str, Any]]) -> str:
    """A message as a person reads it: text, tool calls, results (first lines), diffs, errors."""
    lines: list[str] = []
    for part in parts:
        kind = part.get("type")
        if kind == "text" and part.get("text"):
            lines.append(f"{role}: {part['text']}")
        elif kind == "tool_call":
            lines.append(f"{role} calls {part['name']}({part['arguments']})")
        elif kind == "tool_result":
            flag = " (interrupted)" if part.get("interrupted") else " (error)" if part.get("is_error") else ""
            content = part.get("content", "").splitlines()
            lines.append(f"{part.get('name', 'tool')} result{flag}:")
            lines += [f"  {line}" for line in content[:MAX_RESULT_LINES]]
            if len(content) > MAX_RESULT_LINES:
                lines.append(f"  … {len(content) - MAX_RESULT_LINES} more lines")
        elif kind == "diff":
            diff = part.get("diff", "").splitlines()
            lines += [f"  {line}" for line in diff[:MAX_DIFF_LINES]]
            if len(diff) > MAX_DIFF_LINES:
                lines.append(f"  … {len(diff) - MAX_DIFF_LINES} more diff lines")
        elif kind == "image":
            lines.append(f"{role}: [image {part.get('media_type')} {str(part.get('blob'))[:12]}]")
        elif kind == "error":
            lines.append(f"{role}: error {part.get('code')}: {part.get('message')}")
    return "\n".join(lines) or f"{role}: (empty)"


def approval_hint(data: dict[str, Any]) -> str:
    """An `approval.requested` event as a person acts on it: what waits, and the command that decides."""
    return (f"approval needed: {data.get('tool')} {json.dumps(data.get('arguments'))} — "
            f"boocode approval approve {data.get('id')} (or deny)")


def describe_event(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    detail = ""
    if event["type"] == "message.created":
        detail = render_parts(data.get("role", "?"), data.get("parts", []))
    elif event["type"] == "approval.requested":
        detail = approval_hint(data)
    elif event["type"] == "text.delta":
        detail = repr(data.get("text", ""))[:80]
    elif event["type"].startswith("step."):
        detail = f"{data.get('step_key')} {data.get('status', '')} attempt {data.get('attempt')}"
    elif event["type"] == "subagent.spawned":
        detail = f"{data.get('label') or ''} {data.get('task_id')}".strip()
    elif event["type"] == "subagent.finished":
        detail = (f"{data.get('label') or data.get('task_id')} {data.get('status')} after "
                  f"{data.get('duration_seconds')}s — boocode subagent result {data.get('task_id')}")
    elif event["type"] == "run.finished":
        detail = data.get("status", "")
        if data.get("error"):
            detail += f" — {data['error'].get('message')}"
    run = f" run {event['run_id'][:8]}" if event.get("run_id") else ""
    first, *rest = (detail or "").split("\n")
    line = f"{event['seq']:>6}  {event['type']:<16}{run}  {first}".rstrip()
    return "\n".join([line, *(" " * 8 + extra for extra in rest)])


def _cell(value: Any, limit: int | None = 60) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    if limit and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
