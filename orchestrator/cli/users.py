"""`boocode user …`: accounts on the server (listing and creating them is for admins)."""

from __future__ import annotations

import sys

import click

from orchestrator.cli import EXIT_NOT_FOUND, output
from orchestrator.cli.client import CliError
from orchestrator.cli.context import Context, json_option, pass_context


@click.group()
def user() -> None:
    """Users (admin)."""


@user.command("list")
@json_option
@pass_context
def user_list(context: Context, as_json: bool) -> None:
    found = context.api().get("/api/users")["users"]
    output.emit(found, as_json, output.table("id", "username", "is_admin", "created_at"))


@user.command("create")
@click.argument("username")
@click.option("--admin", "is_admin", is_flag=True)
@json_option
@pass_context
def user_create(context: Context, username: str, is_admin: bool, as_json: bool) -> None:
    created = context.api().post("/api/users", {"username": username, "is_admin": is_admin})["user"]
    output.emit(created, as_json, output.emit_record)


@user.command("password")
@click.argument("username", required=False)
@pass_context
def user_password(context: Context, username: str | None) -> None:
    """Set the password USERNAME signs in with in a browser (yours if omitted; others' for admins).
    The password is read from standard input (first line), never from the command line."""
    api = context.api()
    if username is None:
        found = api.get("/api/me")["user"]
    else:
        found = next((each for each in api.get("/api/users")["users"] if each["username"] == username), None)
        if found is None:
            raise CliError(f"no user named {username!r}", EXIT_NOT_FOUND)
    password = sys.stdin.readline().rstrip("\n")
    api.put(f"/api/users/{found['id']}/password", {"password": password})
    click.echo(f"password set for {found['username']}")
