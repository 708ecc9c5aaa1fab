"""`boocode project …`: projects (directories on the server), their members, model provider and tool
approval policy."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

import click

from orchestrator.cli import output
from orchestrator.cli.client import ApiClient
from orchestrator.cli.context import Context, json_option, pass_context


@click.group()
def project() -> None:
    """Projects (directories on the server)."""


@project.command("add")
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default=None, help="Display name (default: the directory name).")
@json_option
@pass_context
def project_add(context: Context, path: Path, name: str | None, as_json: bool) -> None:
    """Register PATH (a directory on the server machine) as a project."""
    root = path.expanduser().absolute()
    created = context.api().post("/api/projects", {"name": name or root.name or str(root), "root_path": str(root)})
    output.emit(created["project"], as_json, output.emit_record)


@project.command("list")
@json_option
@pass_context
def project_list(context: Context, as_json: bool) -> None:
    found = context.api().get("/api/projects")["projects"]
    output.emit(found, as_json, output.table("id", "name", "role", "root_path"))


@project.command("show")
@click.argument("project_id")
@json_option
@pass_context
def project_show(context: Context, project_id: str, as_json: bool) -> None:
    found = context.api().get(f"/api/projects/{project_id}")["project"]
    output.emit(found, as_json, output.emit_record)


@project.command("members")
@click.argument("project_id")
@json_option
@pass_context
def project_members(context: Context, project_id: str, as_json: bool) -> None:
    found = context.api().get(f"/api/projects/{project_id}/members")["members"]
    output.emit(found, as_json, output.table("user_id", "username", "role"))


@project.command("set-role")
@click.argument("project_id")
@click.argument("user_id")
@click.argument("role", type=click.Choice(["owner", "member", "viewer"]))
@pass_context
def project_set_role(context: Context, project_id: str, user_id: str, role: str) -> None:
    """Add USER_ID to the project with ROLE, or change their role (owner only)."""
    context.api().request("PUT", f"/api/projects/{project_id}/members/{user_id}", body={"role": role})
    click.echo(f"{user_id} is now {role}")


def provider_body(base_url: str, model: str, api_key_stdin: bool, vision: bool | None,
                  context_window: int | None) -> dict[str, Any]:
    """The PUT body: only what was given, so an unset flag keeps the server's default."""
    body: dict[str, Any] = {"base_url": base_url, "model": model}
    if api_key_stdin:  # never on the command line, where `ps` and shell history would show it
        body["api_key"] = sys.stdin.read().strip()  # click.get_text_stream is deprecated (gone in Click 9)
    if vision is not None:
        body["vision"] = vision
    if context_window:
        body["context_window"] = context_window
    return body


def print_provider(found: dict[str, Any]) -> None:
    if found["provider"] is None:
        click.echo("no provider: set one here or BOOCODE_MODEL_BASE_URL/BOOCODE_MODEL on the server")
    else:
        output.emit_record({"source": found["source"], **found["provider"]})


@project.command("provider")
@click.argument("project_id")
@click.option("--base-url", default=None, help="OpenAI-compatible endpoint, e.g. https://api.deepseek.com/v1")
@click.option("--model", default=None)
@click.option("--api-key-stdin", is_flag=True, help="Read the API key from standard input (stored encrypted).")
@click.option("--vision/--no-vision", default=None, help="The model accepts images.")
@click.option("--context-window", type=click.IntRange(min=1024), default=None)
@click.option("--clear", is_flag=True, help="Go back to the server's provider.")
@json_option
@pass_context
def project_provider(context: Context, project_id: str, base_url: str | None, model: str | None, api_key_stdin: bool,
                     vision: bool | None, context_window: int | None, clear: bool, as_json: bool) -> None:
    """Show or set the model provider the project's runs use (owner to change it)."""
    api = context.api()
    path = f"/api/projects/{project_id}/provider"
    if clear:
        found = api.request("DELETE", path)
    elif base_url or model:
        if not (base_url and model):
            raise click.UsageError("give both --base-url and --model")
        found = api.request("PUT", path, body=provider_body(base_url, model, api_key_stdin, vision, context_window))
    else:
        found = api.get(path)
    output.emit(found, as_json, print_provider)


def replace_policy(api: ApiClient, project_id: str, policy_file: IO[str]) -> Any:
    try:
        policy = json.load(policy_file)
    except ValueError as error:
        raise click.UsageError(f"the policy file is not valid JSON: {error}") from None
    return api.request("PUT", f"/api/projects/{project_id}/policy", body=policy)


def print_policy(found: dict[str, Any]) -> None:
    output.emit_table(found["policy"]["rules"] + found["defaults"], ["tool", "match", "decision", "default"])


@project.command("policy")
@click.argument("project_id")
@click.option("--set", "policy_file", type=click.File("r"), default=None,
              help='Replace the policy with this JSON file ("-" for stdin), e.g. {"rules": [...]}.')
@json_option
@pass_context
def project_policy(context: Context, project_id: str, policy_file: IO[str] | None, as_json: bool) -> None:
    """Show (or with --set replace) the project's tool approval policy."""
    api = context.api()
    if policy_file is not None:
        found = replace_policy(api, project_id, policy_file)
    else:
        found = api.get(f"/api/projects/{project_id}/policy")
    output.emit(found, as_json, print_policy)
