"""`boocode workflow …`: list, run (or dry-run), follow, cancel, resume and read workflow runs.

`run --wait`, `resume --wait` and `result` exit EXIT_SERVER unless the run completed (with or without
failures), so a script can chain on them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from orchestrator.cli import EXIT_SERVER, output
from orchestrator.cli.client import ApiClient
from orchestrator.cli.context import Context, json_option, pass_context

SUCCEEDED = ("completed", "completed_with_failures")  # what exits EXIT_OK


def describe_progress(event: dict[str, Any]) -> str | None:
    """One line per workflow event worth a person's attention while waiting."""
    data, kind = event.get("data") or {}, event["type"]
    name = data.get("label") or (data.get("key") or "")[:8]
    phase = f"[{data['phase']}] " if data.get("phase") else ""
    if kind == "workflow.agent.started":
        return f"  started  {phase}{name}"
    if kind == "workflow.agent.cached":
        return f"  cached   {phase}{name} (from the journal, {data.get('tokens', 0)} tokens not spent again)"
    if kind == "workflow.agent.finished":
        extra = f" — {data['error'].get('message')}" if data.get("error") else ""
        return (f"  {data.get('status', '?'):<8} {phase}{name} "
                f"({data.get('tokens', 0)} tokens, ${data.get('cost', 0):.4f}){extra}")
    if kind == "workflow.agents.queued":
        count = data.get("count", 0)
        return f"  queued   {count} agent{'s' if count != 1 else ''} waiting for a free slot (they start in order)"
    if kind == "workflow.agent.refused":
        return f"  refused  {phase}{name} — {(data.get('error') or {}).get('message')}"
    if kind == "workflow.log":
        return f"  {'==' if data.get('level') == 'phase' else 'log'} {data.get('text')}"
    return None


def last_seq(api: ApiClient, session_id: str) -> int:
    """Where to start following: events before this belong to earlier work."""
    return int(api.get(f"/api/sessions/{session_id}")["session"]["last_seq"])


def follow(api: ApiClient, session_id: str, run_id: str, echo: Callable[[str], None], since: int) -> dict[str, Any]:
    """Print the run's progress from event `since` on, until it finishes; then its status report."""
    for event in api.stream_events(session_id, since):
        if event["type"] == "approval.requested":  # one of its agents waits for a person: say so, and how
            echo(f"  {output.approval_hint(event.get('data') or {})}")
        if event.get("run_id") == run_id:
            line = describe_progress(event)
            if line:
                echo(line)
            if event["type"] == "run.finished":
                break
    return api.get(f"/api/runs/{run_id}/workflow")


def print_status(report: dict[str, Any]) -> None:
    run, meta = report["run"], report["meta"] or {}
    status = run["status"]
    if status == "queued" and (run["started_at"] or report["counts"].get("running")):
        status = "running"  # between two ticks the run waits for a worker while its agents work (as in the UI)
    click.echo(f"workflow {meta.get('name')} — run {run['id']} {status} (pass {report['pass']})")
    totals = report["totals"]
    click.echo(f"agent runs {totals['agents']} (all passes)  cached this pass {report['cached']}  "
               f"tokens {totals['tokens']}  cost ${totals['cost']:.4f}  "
               f"ticks {report.get('ticks', 0)} (script replays {report.get('replays', 0)})")
    for phase in report["phases"]:
        click.echo(f"\n{phase['title'] or '(no phase)'}")
        agents = [agent for agent in report["agents"] if agent["key"] in set(phase["agents"])]
        for agent in agents:
            duration = f"{agent['duration_ms'] / 1000:.1f}s" if agent["duration_ms"] is not None else "-"
            mark = " cached" if agent["cached"] else ""
            label = agent["label"] or agent["key"][:8]
            click.echo(f"  {agent['status']:<10} {label:<28} {agent['model'] or '-':<18} "
                       f"{agent['tokens']:>8} tok  ${agent['cost']:.4f}  {duration}{mark}")
            tree = agent.get("worktree") or {}
            if tree.get("kept"):
                click.echo(f"      worktree kept: {tree.get('path')} (branch {tree.get('branch')}, "
                           f"{len(tree.get('changed') or [])} changed path(s))")
    if report["logs"]:
        click.echo("\nlog")
        for line in report["logs"]:
            click.echo(f"  {'==' if line['level'] == 'phase' else line['level']:<5} {line['text']}")
    if report["failures"]:
        click.echo("\nfailures")
        for failure in report["failures"]:
            where = failure.get("label") or f"{failure.get('kind')} slot {failure.get('index')}"
            click.echo(f"  {where}: {failure.get('reason')}")
    if report["error"] and run["status"] == "failed":
        error = report["error"]
        line = f" (line {error['line']})" if error.get("line") else ""
        click.echo(f"\nerror {error.get('code')}{line}: {error.get('message')}")


def print_dry_run(checked: dict[str, Any]) -> None:
    """What the script would do, and what it cost here before: enough to decide whether to run it."""
    click.echo(f"{checked['name']}: {checked['description']}")
    click.echo(f"phases: {', '.join(checked['phases']) or '(none)'}")
    click.echo(f"agents started before the first await: {len(checked['first_wave'])}")
    guess = checked["estimate"]
    click.echo(output.spending_history(guess["history"], "workflow"))
    bounds = guess["bounds"]
    click.echo(f"hard bounds: at most {bounds['max_agents']} agents"
               + (f", {bounds['max_tokens']} tokens" if bounds["max_tokens"] else " (no token cap: --max-tokens)"))


def finish(api: ApiClient, session_id: str, run_id: str, as_json: bool, since: int) -> None:
    """Follow the run to its end (progress lines only for people), print the report, exit by its status."""
    report = follow(api, session_id, run_id, (lambda line: None) if as_json else click.echo, since)

    def print_final(final: dict[str, Any]) -> None:
        click.echo("")
        print_status(final)

    output.emit(report, as_json, print_final)
    if report["run"]["status"] not in SUCCEEDED:
        sys.exit(EXIT_SERVER)


@click.group()
def workflow() -> None:
    """Workflow scripts: fan out to many agents, resume without paying twice."""


def print_workflows(found: dict[str, Any]) -> None:
    output.emit_table(found["workflows"], ["name", "source", "phases", "description"])
    for problem in found["problems"]:
        click.echo(f"refused {problem['path']} (line {problem['line']}): {problem['message']}", err=True)


@workflow.command("list")
@click.option("--project", "project_id", required=True)
@json_option
@pass_context
def workflow_list(context: Context, project_id: str, as_json: bool) -> None:
    """Workflows the project can run (project, personal, built-in) and files that were refused."""
    found = context.api().get(f"/api/projects/{project_id}/workflows")
    output.emit(found, as_json, print_workflows)


def launch_body(name: str | None, file_path: Path | None, project_path: str | None, args_json: str | None,
                caps: dict[str, int | None]) -> dict[str, Any]:
    """The launch request: which script (by name, inline, or by project path), its args and caps."""
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    elif file_path is not None:
        body["script"] = file_path.read_text()
    else:
        body["path"] = project_path
    if args_json is not None:
        try:
            body["args"] = json.loads(args_json)
        except json.JSONDecodeError as error:
            raise click.UsageError(f"--args is not valid JSON: {error.msg} at position {error.pos}") from None
    given = {key: value for key, value in caps.items() if value is not None}
    if given:
        body["caps"] = given
    return body


@workflow.command("run")
@click.argument("name", required=False)
@click.option("--file", "file_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Run this local script file (sent inline).")
@click.option("--path", "project_path", help="Run a script at this path inside the project.")
@click.option("--session", "session_id", help="Run in this session (default: a new one in --project).")
@click.option("--project", "project_id", help="Create a session for the run in this project.")
@click.option("--args", "args_json", default=None, help="Arguments as JSON (the script's `args`).")
@click.option("--concurrency", type=click.IntRange(1, 256), help="Agents in flight at once.")
@click.option("--max-agents", type=click.IntRange(1), help="Hard cap on agents this run may start.")
@click.option("--max-tokens", type=click.IntRange(1), help="Hard cap on tokens (the script's budget.total).")
@click.option("--dry-run", is_flag=True, help="Check the script and show its meta and phases; run nothing.")
@click.option("--wait", is_flag=True, help="Follow progress until the run ends; exit 1 unless it completed.")
@json_option
@pass_context
def workflow_run(context: Context, name: str | None, file_path: Path | None, project_path: str | None,
                 session_id: str | None, project_id: str | None, args_json: str | None, concurrency: int | None,
                 max_agents: int | None, max_tokens: int | None, dry_run: bool, wait: bool, as_json: bool) -> None:
    """Run workflow NAME (or --file / --path) with --args."""
    if sum(value is not None for value in (name, file_path, project_path)) != 1:
        raise click.UsageError("give exactly one of NAME, --file or --path")
    if bool(session_id) == bool(project_id):
        raise click.UsageError("give exactly one of --session or --project")
    caps = {"concurrency": concurrency, "max_agents": max_agents, "max_tokens": max_tokens}
    body = launch_body(name, file_path, project_path, args_json, caps)
    api = context.api()
    if project_id:
        title = f"workflow {name or (file_path.name if file_path else project_path)}"
        session_id = api.post(f"/api/projects/{project_id}/sessions", {"title": title})["session"]["id"]
    if dry_run:
        checked = api.post(f"/api/sessions/{session_id}/workflows", {**body, "dry_run": True})["dry_run"]
        output.emit(checked, as_json, print_dry_run)
        return
    assert session_id is not None  # one of --session / --project, checked above
    since = last_seq(api, session_id)
    created = api.post(f"/api/sessions/{session_id}/workflows", body)["run"]
    if not wait:
        output.emit(created, as_json,
                    lambda queued: click.echo(f"queued workflow run {queued['id']} in session {session_id}"))
        return
    finish(api, session_id, created["id"], as_json, since)


@workflow.command("status")
@click.argument("run_id")
@json_option
@pass_context
def workflow_status(context: Context, run_id: str, as_json: bool) -> None:
    """Phases, agents (status, model, tokens, cost, duration, cached), log and failures."""
    report = context.api().get(f"/api/runs/{run_id}/workflow")
    output.emit(report, as_json, print_status)


def print_result(found: dict[str, Any]) -> None:
    """The value on stdout (JSON, so it pipes into jq), what went wrong on stderr."""
    click.echo(json.dumps(found["value"], indent=2))
    for failure in found["failures"]:
        click.echo(f"failure: {failure.get('label') or failure.get('kind')}: {failure.get('reason')}", err=True)
    if found["error"] and found["status"] != "completed":
        click.echo(f"error: {found['error'].get('message')}", err=True)


@workflow.command("result")
@click.argument("run_id")
@json_option
@pass_context
def workflow_result(context: Context, run_id: str, as_json: bool) -> None:
    """The value the script returned (JSON), with failures on stderr; exit 1 unless it completed."""
    found = context.api().get(f"/api/runs/{run_id}/result")
    output.emit(found, as_json, print_result)
    if found["status"] not in SUCCEEDED:
        sys.exit(EXIT_SERVER)


@workflow.command("cancel")
@click.argument("run_id")
@pass_context
def workflow_cancel(context: Context, run_id: str) -> None:
    """Stop dispatching at once and cancel the agents in flight."""
    found = context.api().post(f"/api/runs/{run_id}/cancel")["run"]
    click.echo(f"workflow run {run_id} is {found['status']}")


@workflow.command("resume")
@click.argument("run_id")
@click.option("--file", "file_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Resume with this (edited) local script instead of re-reading the original source.")
@click.option("--wait", is_flag=True, help="Follow progress until the run ends.")
@json_option
@pass_context
def workflow_resume(context: Context, run_id: str, file_path: Path | None, wait: bool, as_json: bool) -> None:
    """Run a finished, failed or cancelled workflow again; unchanged agent calls come from the journal."""
    api = context.api()
    body = {"script": file_path.read_text()} if file_path else None
    session_id = api.get(f"/api/runs/{run_id}")["run"]["session_id"]
    since = last_seq(api, session_id)
    resumed = api.post(f"/api/runs/{run_id}/resume", body)["run"]
    if not wait:
        output.emit(resumed, as_json, lambda queued: click.echo(f"workflow run {run_id} queued again"))
        return
    finish(api, session_id, run_id, as_json, since)
