"""`boocode run …`: runs of a project or a session — list, read with their journal, cancel, probe.

`run probe --wait` exits EXIT_SERVER unless the probe completed, so a deployment check can rely on it.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from orchestrator.cli import EXIT_SERVER, output
from orchestrator.cli.context import Context, json_option, pass_context


@click.group()
def run() -> None:
    """Runs."""


@run.command("list")
@click.option("--project", "project_id", default=None)
@click.option("--session", "session_id", default=None)
@click.option("--status", default=None)
@click.option("--limit", default=50, type=click.IntRange(1, 500))
@json_option
@pass_context
def run_list(context: Context, project_id: str | None, session_id: str | None, status: str | None, limit: int,
             as_json: bool) -> None:
    """List runs of a project or a session (one of --project/--session)."""
    if bool(project_id) == bool(session_id):
        raise click.UsageError("give exactly one of --project or --session")
    path = f"/api/projects/{project_id}/runs" if project_id else f"/api/sessions/{session_id}/runs"
    found = context.api().get(path, status=status, limit=limit)["runs"]
    output.emit(found, as_json, output.table("id", "kind", "status", "created_at", "finished_at"))


def print_journal(shown: dict[str, Any]) -> None:
    output.emit_record(shown["run"])
    click.echo("")
    output.emit_table(shown["steps"], ["step_key", "status", "attempt", "epoch", "finished_at"])


@run.command("show")
@click.argument("run_id")
@json_option
@pass_context
def run_show(context: Context, run_id: str, as_json: bool) -> None:
    """The run and its journal."""
    api = context.api()
    found = api.get(f"/api/runs/{run_id}")["run"]
    steps = api.get(f"/api/runs/{run_id}/steps")["steps"]
    output.emit({"run": found, "steps": steps}, as_json, print_journal)


@run.command("cancel")
@click.argument("run_id")
@json_option
@pass_context
def run_cancel(context: Context, run_id: str, as_json: bool) -> None:
    found = context.api().post(f"/api/runs/{run_id}/cancel")["run"]
    output.emit(found, as_json, lambda cancelled: click.echo(f"run {run_id} is {cancelled['status']}"))


@run.command("probe")
@click.argument("session_id")
@click.option("--steps", default=3, type=click.IntRange(1, 10000), show_default=True)
@click.option("--step-seconds", default=0.1, type=click.FloatRange(0, 60), show_default=True)
@click.option("--wait", is_flag=True, help="Wait for the run to finish; exit 1 unless it completed.")
@json_option
@pass_context
def run_probe(context: Context, session_id: str, steps: int, step_seconds: float, wait: bool, as_json: bool) -> None:
    """Start a self-test run that journals STEPS steps on a worker."""
    api = context.api()
    created = api.post(f"/api/sessions/{session_id}/probes", {"steps": steps, "step_seconds": step_seconds})["run"]
    if wait:
        for event in api.stream_events(session_id, 0):
            if event["type"] == "run.finished" and event.get("run_id") == created["id"]:
                break
        created = api.get(f"/api/runs/{created['id']}")["run"]
    output.emit(created, as_json, lambda probe: click.echo(f"run {probe['id']} {probe['status']}"))
    if wait and created["status"] != "completed":
        sys.exit(EXIT_SERVER)
