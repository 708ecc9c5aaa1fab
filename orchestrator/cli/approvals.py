"""`boocode approval …`: tool calls the project's policy parked until a person approves or denies them."""

from __future__ import annotations

from typing import Any

import click

from orchestrator.cli import output
from orchestrator.cli.context import Context, json_option, pass_context


@click.group()
def approval() -> None:
    """Approvals of dangerous tool calls."""


@approval.command("list")
@click.option("--session", "session_id", required=True)
@click.option("--status", type=click.Choice(["pending", "approved", "denied"]), default=None)
@json_option
@pass_context
def approval_list(context: Context, session_id: str, status: str | None, as_json: bool) -> None:
    found = context.api().get(f"/api/sessions/{session_id}/approvals", status=status)["approvals"]
    output.emit(found, as_json, output.table("id", "tool", "arguments", "status", "run_id"))


def decide(context: Context, approval_id: str, decision: str, reason: str | None, as_json: bool) -> None:
    """Approve and deny differ only in the decision sent; the server resumes the run when it can."""
    body = {"decision": decision, **({"reason": reason} if reason else {})}
    found = context.api().post(f"/api/approvals/{approval_id}/decision", body)

    def print_decision(decided: dict[str, Any]) -> None:
        click.echo(f"{decided['approval']['status']} {approval_id}"
                   + ("; the run continues" if decided["run_resumed"] else ""))

    output.emit(found, as_json, print_decision)


@approval.command("approve")
@click.argument("approval_id")
@click.option("--reason", default=None)
@json_option
@pass_context
def approval_approve(context: Context, approval_id: str, reason: str | None, as_json: bool) -> None:
    decide(context, approval_id, "approve", reason, as_json)


@approval.command("deny")
@click.argument("approval_id")
@click.option("--reason", default=None, help="Told to the model.")
@json_option
@pass_context
def approval_deny(context: Context, approval_id: str, reason: str | None, as_json: bool) -> None:
    decide(context, approval_id, "deny", reason, as_json)
