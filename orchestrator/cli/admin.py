"""`boocode admin …`: local administration that talks to the database directly, for the first user
before any API token exists."""

from __future__ import annotations

from typing import Any

import click

from orchestrator.cli import output
from orchestrator.cli.context import Context, json_option, pass_context
from orchestrator.cli.db import local_database


@click.group()
def admin() -> None:
    """Local administration (talks to the database directly)."""


@admin.command("create-user")
@click.argument("username")
@click.option("--admin", "is_admin", is_flag=True, help="Make the user a server admin.")
@click.option("--display-name", default=None)
@click.option("--token-name", default="cli", show_default=True, help="Name of the first API token.")
@json_option
@pass_context
def admin_create_user(context: Context, username: str, is_admin: bool, display_name: str | None, token_name: str,
                      as_json: bool) -> None:
    """Create USERNAME and print its first API token (shown once)."""
    from orchestrator.store import users
    from orchestrator.store.database import Database

    with local_database(context.settings) as url:
        database = Database(url)
        try:
            with database.transaction() as session:
                user = users.create_user(session, username, display_name=display_name, is_admin=is_admin)
                _, plain = users.create_token(session, user.id, token_name)
        finally:
            database.dispose()

    def print_created(created: dict[str, Any]) -> None:
        click.echo(f"created user {username}{' (admin)' if is_admin else ''}")
        click.echo(f"token: {created['token']}")

    output.emit({"user": users.serialize_user(user), "token": plain}, as_json, print_created)
