"""`boocode subagent …`: a session's background subagents — list, show one, read its result, cancel, retry.

`subagent result` exits with the subagent's outcome (EXIT_SERVER failed or cancelled, EXIT_NOT_FINISHED
still working), so a script can poll it.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from orchestrator.cli import EXIT_NOT_FINISHED, EXIT_SERVER, output
from orchestrator.cli.context import Context, json_option, pass_context


@click.group()
def subagent() -> None:
    """Background subagents that agents started with spawn_subagent."""


def _row(item: dict[str, Any]) -> dict[str, Any]:
    seconds = item["duration_seconds"]
    return {**item, "duration": "-" if seconds is None else f"{seconds:.1f}s", "label": item["label"] or "-",
            "result": (item["result"] or (item["error"] or {}).get("message") or "").replace("\n", " ")}


def print_subagents(found: dict[str, Any]) -> None:
    output.emit_table([_row(item) for item in found["subagents"]],
                      ["task_id", "label", "state", "duration", "tokens", "result"])
    click.echo(f"{found['running']} running")


@subagent.command("list")
@click.option("--session", "session_id", required=True)
@json_option
@pass_context
def subagent_list(context: Context, session_id: str, as_json: bool) -> None:
    """The session's subagents, newest first, with status, duration, tokens and result."""
    found = context.api().get(f"/api/sessions/{session_id}/subagents")
    output.emit(found, as_json, print_subagents)


@subagent.command("show")
@click.argument("task_id")
@json_option
@pass_context
def subagent_show(context: Context, task_id: str, as_json: bool) -> None:
    """One subagent in full."""
    found = context.api().get(f"/api/subagents/{task_id}")["subagent"]
    output.emit(found, as_json, output.emit_record)


@subagent.command("result")
@click.argument("task_id")
@pass_context
def subagent_result(context: Context, task_id: str) -> None:
    """Print the result; exit 1 if it failed or was cancelled, 75 if it has not finished yet."""
    found = context.api().get(f"/api/subagents/{task_id}")["subagent"]
    if found["status"] == "completed":
        click.echo(found["result"] or "")
        return
    if found["status"] in ("failed", "cancelled", "interrupted"):
        error = found["error"] or {}
        click.echo(f"subagent {task_id} {found['status']}: {error.get('code')}: {error.get('message')}", err=True)
        sys.exit(EXIT_SERVER)
    click.echo(f"not finished yet: subagent {task_id} is {found['state']}", err=True)
    sys.exit(EXIT_NOT_FINISHED)


@subagent.command("cancel")
@click.argument("task_id")
@pass_context
def subagent_cancel(context: Context, task_id: str) -> None:
    """Cancel a subagent that is still working."""
    found = context.api().post(f"/api/runs/{task_id}/cancel")["run"]
    click.echo(f"subagent {task_id} is {found['status']}")


@subagent.command("retry")
@click.argument("task_id")
@pass_context
def subagent_retry(context: Context, task_id: str) -> None:
    """Start a new subagent with the prompt and options of one that ended."""
    found = context.api().post(f"/api/subagents/{task_id}/retry")["subagent"]
    click.echo(f"started subagent {found['task_id']} (retry of {task_id})")
