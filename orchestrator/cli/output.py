"""Printing for people (aligned columns) or for scripts (`--json`)."""

from __future__ import annotations

import json
from typing import Any, Sequence

import click


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


def describe_event(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    detail = ""
    if event["type"] == "message.created":
        texts = [part.get("text", f"[{part.get('type')}]") for part in data.get("parts", [])]
        detail = f"{data.get('role')}: {' '.join(texts)}"
    elif event["type"].startswith("step."):
        detail = f"{data.get('step_key')} {data.get('status', '')} attempt {data.get('attempt')}"
    elif event["type"] == "run.finished":
        detail = data.get("status", "")
        if data.get("error"):
            detail += f" — {data['error'].get('message')}"
    run = f" run {event['run_id'][:8]}" if event.get("run_id") else ""
    return f"{event['seq']:>6}  {event['type']:<16}{run}  {detail}".rstrip()


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
