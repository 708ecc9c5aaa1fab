"""`boocode token …`: API tokens; a new token is printed once and never again."""

from __future__ import annotations

from typing import Any

import click

from orchestrator.cli import output
from orchestrator.cli.context import Context, json_option, pass_context


@click.group()
def token() -> None:
    """API tokens."""


def print_token(created: dict[str, Any]) -> None:
    click.echo(created["token"])


@token.command("create")
@click.option("--name", default="cli", show_default=True)
@click.option("--user-id", default=None, help="Mint for another user (admin).")
@json_option
@pass_context
def token_create(context: Context, name: str, user_id: str | None, as_json: bool) -> None:
    """Create a token and print it (shown once)."""
    path = f"/api/users/{user_id}/tokens" if user_id else "/api/tokens"
    created = context.api().post(path, {"name": name})
    output.emit(created, as_json, print_token)


@token.command("list")
@json_option
@pass_context
def token_list(context: Context, as_json: bool) -> None:
    found = context.api().get("/api/tokens")["tokens"]
    output.emit(found, as_json, output.table("id", "name", "prefix", "revoked", "last_used_at"))


@token.command("revoke")
@click.argument("token_id")
@pass_context
def token_revoke(context: Context, token_id: str) -> None:
    context.api().request("DELETE", f"/api/tokens/{token_id}")
    click.echo(f"revoked {token_id}")
