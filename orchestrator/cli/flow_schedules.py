"""`boocode flow schedule`: list a project's flow schedules, show one with its firings, turn one on or off.

    boocode flow schedule --project P                 every schedule of the project
    boocode flow schedule NAME --project P            one schedule and its last firings
    boocode flow schedule NAME --project P --on       turn the flow's declared schedule on (runs as you)
    boocode flow schedule NAME --project P --off      turn it off
"""

from __future__ import annotations

from typing import Any

import click

from orchestrator.cli import output
from orchestrator.cli.context import Context, json_option, pass_context

COLUMNS = ("flow", "enabled", "cron", "timezone", "next_fire_at", "last_fired_at", "missed", "last_error")


def print_schedule(body: dict[str, Any]) -> None:
    schedule = body["schedule"]
    error = schedule.get("last_error")
    output.emit_record({"flow": schedule["flow"], "enabled": schedule["enabled"],
                        "cron": f"{schedule['cron']} ({schedule['timezone']})",
                        "next firing": schedule.get("next_fire_at") or "-",
                        "last firing": schedule.get("last_fired_at"), "missed": schedule.get("missed", 0),
                        "error": f"{error['code']}: {error['message']}" if error else "-"})
    firings = schedule.get("firings") or []
    if firings:
        click.echo("firings (newest first):")
    for firing in firings:
        why = f" — {firing['error']['message']}" if firing.get("error") else ""
        cancelled = f" (cancelled {', '.join(firing['cancelled'])})" if firing.get("cancelled") else ""
        click.echo(f"  {firing['fire_at']}  {firing['outcome']:<8} {firing.get('run_id') or ''}{cancelled}{why}")


def print_schedules(body: dict[str, Any]) -> None:
    rows = [{**schedule, "last_error": (schedule.get("last_error") or {}).get("message")}
            for schedule in body["schedules"]]
    output.emit_table(rows, COLUMNS)


@click.command("schedule")
@click.argument("name", required=False)
@click.option("--project", "project_id", required=True, help="The project the schedule belongs to.")
@click.option("--on/--off", "enabled", default=None,
              help="Turn the flow's declared `schedule` on (from now on, running as you) or off.")
@json_option
@pass_context
def schedule(context: Context, name: str | None, project_id: str, enabled: bool | None, as_json: bool) -> None:
    """List the project's flow schedules, show one with its firings, or turn one on or off."""
    api = context.api()
    if name is None:
        if enabled is not None:
            raise click.UsageError("--on and --off need the flow's NAME")
        output.emit(api.get(f"/api/projects/{project_id}/flow-schedules"), as_json, print_schedules)
        return
    path = f"/api/projects/{project_id}/flows/{name}/schedule"
    body = api.get(path) if enabled is None else api.put(path, {"enabled": enabled})
    output.emit(body, as_json, print_schedule)
