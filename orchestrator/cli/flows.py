"""`boocode flow …`: list, validate, run (and follow, or only estimate), read, cancel and rerun flow
runs; `flow trigger create|list|revoke` for trigger tokens (`flow schedule` is cli/flow_schedules.py).

`validate` exits EXIT_REJECTED when the definition has problems (each printed with its step and
line); `run --wait`, `rerun --wait` and `result` exit EXIT_SERVER unless the run completed (with or
without failures), so a script can chain on them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from orchestrator.cli import EXIT_REJECTED, EXIT_SERVER, output
from orchestrator.cli.client import ApiClient
from orchestrator.cli.context import Context, json_option, pass_context

SUCCEEDED = ("completed", "completed_with_failures")  # what exits EXIT_OK


def parse_input(input_json: str | None) -> dict[str, Any]:
    if input_json is None:
        return {}
    try:
        return {"input": json.loads(input_json)}
    except json.JSONDecodeError as error:
        raise click.UsageError(f"--input is not valid JSON: {error.msg} at position {error.pos}") from None


def describe_step_event(event: dict[str, Any]) -> str | None:
    """One line per step change worth a person's attention while waiting."""
    data = event.get("data") or {}
    if event["type"] == "flow.step.started":
        return f"  started   {data.get('step')} (attempt {data.get('attempt')})"
    if event["type"] == "flow.step.finished":
        error = f" — {data['error'].get('message')}" if data.get("error") else ""
        reason = f" ({data['reason']})" if data.get("reason") and not error else ""
        return f"  {data.get('state', '?'):<9} {data.get('step')}{reason}{error}"
    return None


def follow(api: ApiClient, session_id: str, run_id: str, echo: Any, since: int) -> dict[str, Any]:
    """Print the run's step changes from event `since` on, until it finishes."""
    for event in api.stream_events(session_id, since):
        if event.get("run_id") != run_id:
            continue
        line = describe_step_event(event)
        if line:
            echo(line)
        if event["type"] == "run.finished":
            break
    return api.get(f"/api/flow-runs/{run_id}")


def print_status(report: dict[str, Any]) -> None:
    run, flow, totals = report["run"], report["flow"], report["totals"]
    click.echo(f"flow {flow['name']} — run {run['id']} {run['status']}  tokens {totals['tokens']}  "
               f"cost ${totals['cost']:.4f}")
    for step in report["steps"]:
        duration = f"{step['duration_ms'] / 1000:.1f}s" if step.get("duration_ms") is not None else "-"
        deps = f" <- {', '.join(step['deps'])}" if step["deps"] else ""
        click.echo(f"  {step['state']:<16} {step['id']:<24} {step['kind']:<7} attempt {step.get('attempt', 0)}  "
                   f"{step.get('tokens', 0):>7} tok  ${step.get('cost', 0):.4f}  {duration}{deps}")
        if step.get("error"):
            click.echo(f"      {step['error'].get('code')}: {step['error'].get('message')}")
    for failure in report["failures"]:
        click.echo(f"failed: {failure['step']} ({failure['state']})", err=True)
    if report["error"] and run["status"] == "failed":
        click.echo(f"error {report['error'].get('code')}: {report['error'].get('message')}", err=True)


def finish(api: ApiClient, session_id: str, run_id: str, as_json: bool, since: int) -> None:
    report = follow(api, session_id, run_id, (lambda line: None) if as_json else click.echo, since)
    output.emit(report, as_json, print_status)
    if report["run"]["status"] not in SUCCEEDED:
        sys.exit(EXIT_SERVER)


@click.group()
def flow() -> None:
    """Flows: declared DAGs of agent, code, switch and flow steps."""


def print_flows(found: dict[str, Any]) -> None:
    rows = [{**entry, "steps": len(entry["steps"])} for entry in found["flows"]]
    output.emit_table(rows, ["name", "source", "steps", "description"])
    for refused in found["problems"]:
        for problem in refused["problems"]:
            where = f"line {problem['line']}" if problem["line"] else "file"
            step = f" step {problem['step']}" if problem["step"] else ""
            click.echo(f"refused {refused['path']} ({where}{step}): {problem['message']}", err=True)


@flow.command("list")
@click.option("--project", "project_id", required=True)
@json_option
@pass_context
def flow_list(context: Context, project_id: str, as_json: bool) -> None:
    """Flows the project can run (project, personal, built-in) and files that were refused."""
    output.emit(context.api().get(f"/api/projects/{project_id}/flows"), as_json, print_flows)


def print_problems(checked: dict[str, Any]) -> None:
    if checked["valid"]:
        click.echo(f"flow {checked['name']} is valid")
    for problem in checked["problems"]:
        where = f"line {problem['line']}" if problem["line"] else "-"
        step = f" [{problem['step']}]" if problem["step"] else ""
        click.echo(f"{where}{step}: {problem['message']}")


@flow.command("validate")
@click.argument("file_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@pass_context
def flow_validate(context: Context, file_path: Path, as_json: bool) -> None:
    """Check FILE (YAML or JSON): every problem at once, with its step and line; exit 5 if any."""
    checked = context.api().post("/api/flows/validate", {"text": file_path.read_text()})
    output.emit(checked, as_json, print_problems)
    if not checked["valid"]:
        sys.exit(EXIT_REJECTED)


def print_estimate(guess: dict[str, Any]) -> None:
    """What the flow would do, and what it cost here before: enough to decide whether to run it."""
    click.echo(f"{guess['flow']}: {guess['description']}" if guess["description"] else guess["flow"])
    click.echo("steps: " + ", ".join(f"{count} {kind}" for kind, count in guess["steps"].items()))
    click.echo(f"agent calls: at most {guess['max_agent_calls']} ({guess['agent_steps']} agent step(s), every "
               f"attempt and every switch branch counted)")
    for nested in guess["nested_flows"]:
        found = (f"at most {nested['max_agent_calls']} agent calls" if nested["found"]
                 else "not found, not counted")
        click.echo(f"  flow step {nested['step']} runs flow {nested['flow']}: {found}")
    click.echo(output.spending_history(guess["history"], "flow"))
    bounds = guess["bounds"]
    limits = [f"{bounds['agents']} agents" if bounds["agents"] else None,
              f"{bounds['tokens']} tokens" if bounds["tokens"] else None,
              f"${bounds['cost']:.4f}" if bounds["cost"] else None]
    shown = ", ".join(limit for limit in limits if limit)
    click.echo(f"hard bounds: at most {shown}" if shown
               else "hard bounds: none (set caps: {agents, tokens, cost} in the flow file)")


@flow.command("run")
@click.argument("name")
@click.option("--project", "project_id", required=True, help="The project whose flow NAME to run.")
@click.option("--input", "input_json", default=None, help="The flow's input as JSON.")
@click.option("--wait", is_flag=True, help="Follow the steps until the run ends; exit 1 unless it completed.")
@click.option("--dry-run", is_flag=True, help="Check the input and estimate the run (agents, cost, caps); run nothing.")
@json_option
@pass_context
def flow_run(context: Context, name: str, project_id: str, input_json: str | None, wait: bool, dry_run: bool,
             as_json: bool) -> None:
    """Start flow NAME with --input (in a session of its own)."""
    api = context.api()
    if dry_run:
        guess = api.post(f"/api/projects/{project_id}/flows/{name}/estimate", parse_input(input_json))["estimate"]
        output.emit(guess, as_json, print_estimate)
        return
    created = api.post(f"/api/projects/{project_id}/flows/{name}/runs", parse_input(input_json))
    if not wait:
        output.emit(created["run"], as_json, lambda run: click.echo(f"queued flow run {run['id']}"))
        return
    finish(api, created["session"]["id"], created["run"]["id"], as_json, 0)  # a session of its own


@flow.command("status")
@click.argument("run_id")
@json_option
@pass_context
def flow_status(context: Context, run_id: str, as_json: bool) -> None:
    """Each step: state, attempt, tokens, cost, duration, deps; failures and the run's error."""
    output.emit(context.api().get(f"/api/flow-runs/{run_id}"), as_json, print_status)


@flow.command("result")
@click.argument("run_id")
@json_option
@pass_context
def flow_result(context: Context, run_id: str, as_json: bool) -> None:
    """The run's output (JSON on stdout), failures on stderr; exit 1 unless it completed."""
    report = context.api().get(f"/api/flow-runs/{run_id}")
    found = {"status": report["run"]["status"], "value": report["value"], "failures": report["failures"],
             "blocked": report["blocked"], "error": report["error"]}

    def print_result(value: dict[str, Any]) -> None:
        shown = value["value"]
        click.echo(shown if isinstance(shown, str) else json.dumps(shown, indent=2))
        for failure in value["failures"]:
            click.echo(f"failure: {failure['step']}: {(failure.get('error') or {}).get('message')}", err=True)

    output.emit(found, as_json, print_result)
    if found["status"] not in SUCCEEDED:
        sys.exit(EXIT_SERVER)


@flow.command("cancel")
@click.argument("run_id")
@pass_context
def flow_cancel(context: Context, run_id: str) -> None:
    """Cancel every unfinished step and its child run."""
    found = context.api().post(f"/api/flow-runs/{run_id}/cancel")["run"]
    click.echo(f"flow run {run_id} is {found['status']}")


@flow.command("rerun")
@click.argument("run_id")
@click.option("--from", "from_step", required=True, help="The step to run again, with everything after it.")
@click.option("--input", "input_json", default=None, help="New input as JSON (for the steps that run again).")
@click.option("--wait", is_flag=True, help="Follow the steps until the run ends.")
@json_option
@pass_context
def flow_rerun(context: Context, run_id: str, from_step: str, input_json: str | None, wait: bool,
               as_json: bool) -> None:
    """Run a finished flow run again from STEP; the steps before it keep their results."""
    api = context.api()
    session_id = api.get(f"/api/runs/{run_id}")["run"]["session_id"]
    since = int(api.get(f"/api/sessions/{session_id}")["session"]["last_seq"])  # the earlier pass ended before
    rerun = api.post(f"/api/flow-runs/{run_id}/rerun", {"from_step": from_step, **parse_input(input_json)})["run"]
    if not wait:
        output.emit(rerun, as_json, lambda run: click.echo(f"flow run {run_id} queued again from {from_step}"))
        return
    finish(api, session_id, run_id, as_json, since)


@flow.group("trigger")
def trigger() -> None:
    """Trigger tokens (owners): each lets a program (CI, a git hook) start one flow of one project."""


@trigger.command("create")
@click.argument("name")
@click.option("--project", "project_id", required=True, help="The project whose flow NAME the token starts.")
@json_option
@pass_context
def trigger_create(context: Context, name: str, project_id: str, as_json: bool) -> None:
    """A token that starts flow NAME; it is shown this once (only its hash is kept)."""
    created = context.api().post(f"/api/projects/{project_id}/flows/{name}/triggers")

    def print_created(value: dict[str, Any]) -> None:
        click.echo(f"trigger {value['trigger']['id']} for flow {value['trigger']['flow']} (shown once, keep it):")
        click.echo(value["token"])
        click.echo(f"start it with: POST /api/flows/{value['trigger']['id']}/trigger "
                   "and 'Authorization: Bearer <token>'", err=True)

    output.emit(created, as_json, print_created)


@trigger.command("list")
@click.option("--project", "project_id", required=True)
@json_option
@pass_context
def trigger_list(context: Context, project_id: str, as_json: bool) -> None:
    """The project's trigger tokens that still work (never the tokens themselves)."""
    found = context.api().get(f"/api/projects/{project_id}/flows/triggers")
    output.emit(found, as_json, lambda value: output.emit_table(value["triggers"],
                                                                ["id", "flow", "created_by", "created_at"]))


@trigger.command("revoke")
@click.argument("trigger_id")
@pass_context
def trigger_revoke(context: Context, trigger_id: str) -> None:
    """From now on the token starts nothing."""
    revoked = context.api().request("DELETE", f"/api/flow-triggers/{trigger_id}")["trigger"]
    click.echo(f"trigger {revoked['id']} for flow {revoked['flow']} is revoked")
