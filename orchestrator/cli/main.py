"""`boocode` commands. Client commands talk to the API; `up`, `web`, `worker`, `db` and `admin` are local.

See `orchestrator/cli/__init__.py` for the exit codes.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click

from orchestrator.cli import (EXIT_AUTH, EXIT_NOT_FOUND, EXIT_REJECTED, EXIT_SERVER, EXIT_UNREACHABLE, EXIT_USAGE,
                              output)
from orchestrator.cli import model, subagents, workflows
from orchestrator.cli.client import ApiClient, CliError
from orchestrator.errors import (ConfigurationError, NotFoundError, OrchestratorError, PermissionDeniedError,
                                 ServiceError)
from orchestrator.settings import Settings, load_settings

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


class Context:
    def __init__(self, url: str | None, token: str | None) -> None:
        self.url = url
        self.token = token
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    def api(self) -> ApiClient:
        return ApiClient(self.settings, self.url, self.token)


pass_context = click.make_pass_decorator(Context)


@click.group()
@click.option("--url", envvar=None, help="Server URL (default: BOOCODE_URL, then what `boocode up` saved).")
@click.option("--token", envvar=None, help="API token (default: BOOCODE_TOKEN, then what `boocode up` saved).")
@click.version_option(package_name="boocode-orchestrator")
@click.pass_context
def cli(click_context: click.Context, url: str | None, token: str | None) -> None:
    """BooCode Orchestrator: run LLM coding agents durably on a team server."""
    click_context.obj = Context(url, token)


# ---------------------------------------------------------------- local: processes and database

@cli.command()
@pass_context
def up(context: Context) -> None:
    """Single-machine mode: web + a worker, plus PostgreSQL/Redis when not configured. Ctrl-C stops all."""
    from orchestrator.cli.up import run_up

    sys.exit(run_up(context.settings))


@cli.command()
@pass_context
def web(context: Context) -> None:
    """Run the web front end under gunicorn (needs DATABASE_URL and REDIS_URL)."""
    from orchestrator.cli.up import web_command

    context.settings.require_services()
    command = web_command(context.settings)
    os.execvp(command[0], command)


@cli.command()
@pass_context
def worker(context: Context) -> None:
    """Run a Celery worker on every queue (needs DATABASE_URL and REDIS_URL)."""
    from orchestrator.cli.up import worker_command

    context.settings.require_services()
    command = worker_command(context.settings)
    os.execvp(command[0], command)


@cli.group()
def db() -> None:
    """Database migrations."""


@contextmanager
def local_database(settings: Settings) -> Iterator[str]:
    """DATABASE_URL, or the embedded PostgreSQL in the data directory (started if needed, then stopped
    unless `boocode up` is also using it)."""
    if settings.database_url:
        yield settings.database_url
        return
    from orchestrator.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(settings.data_dir / "postgres")
    try:
        yield embedded.start()
    finally:
        embedded.stop()


@db.command("upgrade")
@click.argument("revision", default="head")
@pass_context
def db_upgrade(context: Context, revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    from orchestrator import migrate

    with local_database(context.settings) as url:
        migrate.upgrade(url, revision)
        click.echo(f"database at revision {migrate.current_revision(url) or '(empty)'}")


@db.command("downgrade")
@click.argument("revision", default="-1")
@pass_context
def db_downgrade(context: Context, revision: str) -> None:
    """Revert migrations to REVISION (default: one step)."""
    from orchestrator import migrate

    with local_database(context.settings) as url:
        migrate.downgrade(url, revision)
        click.echo(f"database at revision {migrate.current_revision(url) or '(empty)'}")


@db.command("current")
@pass_context
def db_current(context: Context) -> None:
    """Print the database's migration revision."""
    from orchestrator import migrate

    with local_database(context.settings) as url:
        click.echo(migrate.current_revision(url) or "(empty)")


@cli.group()
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
    if as_json:
        output.emit_json({"user": users.serialize_user(user), "token": plain})
    else:
        click.echo(f"created user {username}{' (admin)' if is_admin else ''}")
        click.echo(f"token: {plain}")


# ---------------------------------------------------------------- API: users and tokens

@cli.group()
def user() -> None:
    """Users (admin)."""


@user.command("list")
@json_option
@pass_context
def user_list(context: Context, as_json: bool) -> None:
    found = context.api().get("/api/users")["users"]
    output.emit_json(found) if as_json else output.emit_table(found, ["id", "username", "is_admin", "created_at"])


@user.command("create")
@click.argument("username")
@click.option("--admin", "is_admin", is_flag=True)
@json_option
@pass_context
def user_create(context: Context, username: str, is_admin: bool, as_json: bool) -> None:
    created = context.api().post("/api/users", {"username": username, "is_admin": is_admin})["user"]
    output.emit_json(created) if as_json else output.emit_record(created)


@user.command("password")
@click.argument("username", required=False)
@pass_context
def user_password(context: Context, username: str | None) -> None:
    """Set the password USERNAME signs in with in a browser (yours if omitted; others' for admins).
    The password is read from standard input (first line), never from the command line."""
    api = context.api()
    if username is None:
        user = api.get("/api/me")["user"]
    else:
        user = next((found for found in api.get("/api/users")["users"] if found["username"] == username), None)
        if user is None:
            raise CliError(f"no user named {username!r}", EXIT_NOT_FOUND)
    password = sys.stdin.readline().rstrip("\n")
    api.put(f"/api/users/{user['id']}/password", {"password": password})
    click.echo(f"password set for {user['username']}")


@cli.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@click.option("--name", default="cli", show_default=True)
@click.option("--user-id", default=None, help="Mint for another user (admin).")
@json_option
@pass_context
def token_create(context: Context, name: str, user_id: str | None, as_json: bool) -> None:
    """Create a token and print it (shown once)."""
    path = f"/api/users/{user_id}/tokens" if user_id else "/api/tokens"
    created = context.api().post(path, {"name": name})
    output.emit_json(created) if as_json else click.echo(created["token"])


@token.command("list")
@json_option
@pass_context
def token_list(context: Context, as_json: bool) -> None:
    found = context.api().get("/api/tokens")["tokens"]
    output.emit_json(found) if as_json else output.emit_table(found, ["id", "name", "prefix", "revoked", "last_used_at"])


@token.command("revoke")
@click.argument("token_id")
@pass_context
def token_revoke(context: Context, token_id: str) -> None:
    context.api().request("DELETE", f"/api/tokens/{token_id}")
    click.echo(f"revoked {token_id}")


# ---------------------------------------------------------------- API: projects

@cli.group()
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
    output.emit_json(created["project"]) if as_json else output.emit_record(created["project"])


@project.command("list")
@json_option
@pass_context
def project_list(context: Context, as_json: bool) -> None:
    found = context.api().get("/api/projects")["projects"]
    output.emit_json(found) if as_json else output.emit_table(found, ["id", "name", "role", "root_path"])


@project.command("show")
@click.argument("project_id")
@json_option
@pass_context
def project_show(context: Context, project_id: str, as_json: bool) -> None:
    found = context.api().get(f"/api/projects/{project_id}")["project"]
    output.emit_json(found) if as_json else output.emit_record(found)


@project.command("members")
@click.argument("project_id")
@json_option
@pass_context
def project_members(context: Context, project_id: str, as_json: bool) -> None:
    found = context.api().get(f"/api/projects/{project_id}/members")["members"]
    output.emit_json(found) if as_json else output.emit_table(found, ["user_id", "username", "role"])


@project.command("set-role")
@click.argument("project_id")
@click.argument("user_id")
@click.argument("role", type=click.Choice(["owner", "member", "viewer"]))
@pass_context
def project_set_role(context: Context, project_id: str, user_id: str, role: str) -> None:
    """Add USER_ID to the project with ROLE, or change their role (owner only)."""
    context.api().request("PUT", f"/api/projects/{project_id}/members/{user_id}", body={"role": role})
    click.echo(f"{user_id} is now {role}")


# ---------------------------------------------------------------- API: sessions

@cli.group()
def session() -> None:
    """Chat sessions."""


@session.command("list")
@click.option("--project", "project_id", required=True)
@json_option
@pass_context
def session_list(context: Context, project_id: str, as_json: bool) -> None:
    found = context.api().get(f"/api/projects/{project_id}/sessions")["sessions"]
    output.emit_json(found) if as_json else output.emit_table(found, ["id", "title", "last_seq", "updated_at"])


@session.command("create")
@click.option("--project", "project_id", required=True)
@click.option("--title", default="New session")
@json_option
@pass_context
def session_create(context: Context, project_id: str, title: str, as_json: bool) -> None:
    created = context.api().post(f"/api/projects/{project_id}/sessions", {"title": title})["session"]
    output.emit_json(created) if as_json else output.emit_record(created)


@session.command("show")
@click.argument("session_id")
@json_option
@pass_context
def session_show(context: Context, session_id: str, as_json: bool) -> None:
    """The session and its messages."""
    api = context.api()
    found = api.get(f"/api/sessions/{session_id}")["session"]
    messages = api.get(f"/api/sessions/{session_id}/messages")["messages"]
    if as_json:
        output.emit_json({"session": found, "messages": messages})
        return
    output.emit_record(found)
    for message in messages:
        click.echo(f"\n[{message['seq']}] " + output.render_parts(message["role"], message["parts"]))


@session.command("send")
@click.argument("session_id")
@click.argument("text")
@click.option("--image", "images", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Attach an image (PNG, JPEG, GIF, WebP); may be repeated.")
@json_option
@pass_context
def session_send(context: Context, session_id: str, text: str, images: tuple[Path, ...], as_json: bool) -> None:
    """Post a user message (with optional images); prints the queued run."""
    api = context.api()
    parts: list[dict[str, str]] = [{"type": "text", "text": text}]
    for image in images:
        uploaded = api.request("POST", f"/api/sessions/{session_id}/attachments", content=image.read_bytes(),
                               content_type="application/octet-stream")
        parts.append({"type": "image", "blob": uploaded["blob"], "media_type": uploaded["media_type"]})
    created = api.post(f"/api/sessions/{session_id}/messages", {"parts": parts})
    output.emit_json(created) if as_json else click.echo(f"queued run {created['run']['id']}")


@session.command("watch")
@click.argument("session_id")
@click.option("--since", default=0, type=click.IntRange(min=0), help="Replay events after this seq.")
@click.option("--until-run", default=None, help="Exit once this run has finished.")
@json_option
@pass_context
def session_watch(context: Context, session_id: str, since: int, until_run: str | None, as_json: bool) -> None:
    """Tail the session's events over the WebSocket (replay first, then live). Ctrl-C to stop."""
    try:
        for event in context.api().stream_events(session_id, since):
            click.echo(json.dumps(event, default=str) if as_json else output.describe_event(event))
            if until_run and event["type"] == "run.finished" and event.get("run_id") == until_run:
                return
    except KeyboardInterrupt:
        return


# ---------------------------------------------------------------- API: runs

@cli.group()
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
    output.emit_json(found) if as_json else output.emit_table(found, ["id", "kind", "status", "created_at",
                                                                      "finished_at"])


@run.command("show")
@click.argument("run_id")
@json_option
@pass_context
def run_show(context: Context, run_id: str, as_json: bool) -> None:
    """The run and its journal."""
    api = context.api()
    found = api.get(f"/api/runs/{run_id}")["run"]
    steps = api.get(f"/api/runs/{run_id}/steps")["steps"]
    if as_json:
        output.emit_json({"run": found, "steps": steps})
        return
    output.emit_record(found)
    click.echo("")
    output.emit_table(steps, ["step_key", "status", "attempt", "epoch", "finished_at"])


@run.command("cancel")
@click.argument("run_id")
@json_option
@pass_context
def run_cancel(context: Context, run_id: str, as_json: bool) -> None:
    found = context.api().post(f"/api/runs/{run_id}/cancel")["run"]
    output.emit_json(found) if as_json else click.echo(f"run {run_id} is {found['status']}")


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
    output.emit_json(created) if as_json else click.echo(f"run {created['id']} {created['status']}")
    if wait and created["status"] != "completed":
        sys.exit(EXIT_SERVER)


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
        body: dict[str, object] = {"base_url": base_url, "model": model}
        if api_key_stdin:
            body["api_key"] = click.get_text_stream("stdin").read().strip()
        if vision is not None:
            body["vision"] = vision
        if context_window:
            body["context_window"] = context_window
        found = api.request("PUT", path, body=body)
    else:
        found = api.get(path)
    if as_json:
        output.emit_json(found)
    elif found["provider"] is None:
        click.echo("no provider: set one here or BOOCODE_MODEL_BASE_URL/BOOCODE_MODEL on the server")
    else:
        output.emit_record({"source": found["source"], **found["provider"]})


@project.command("policy")
@click.argument("project_id")
@click.option("--set", "policy_file", type=click.File("r"), default=None,
              help='Replace the policy with this JSON file ("-" for stdin), e.g. {"rules": [...]}.')
@json_option
@pass_context
def project_policy(context: Context, project_id: str, policy_file, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """Show (or with --set replace) the project's tool approval policy."""
    api = context.api()
    if policy_file is not None:
        try:
            policy = json.load(policy_file)
        except ValueError as error:
            raise click.UsageError(f"the policy file is not valid JSON: {error}") from None
        found = api.request("PUT", f"/api/projects/{project_id}/policy", body=policy)
    else:
        found = api.get(f"/api/projects/{project_id}/policy")
    if as_json:
        output.emit_json(found)
        return
    output.emit_table(found["policy"]["rules"] + found["defaults"], ["tool", "match", "decision", "default"])


@cli.group()
def approval() -> None:
    """Approvals of dangerous tool calls."""


@approval.command("list")
@click.option("--session", "session_id", required=True)
@click.option("--status", type=click.Choice(["pending", "approved", "denied"]), default=None)
@json_option
@pass_context
def approval_list(context: Context, session_id: str, status: str | None, as_json: bool) -> None:
    found = context.api().get(f"/api/sessions/{session_id}/approvals", status=status)["approvals"]
    output.emit_json(found) if as_json else output.emit_table(found, ["id", "tool", "arguments", "status", "run_id"])


def _decide(context: Context, approval_id: str, decision: str, reason: str | None, as_json: bool) -> None:
    body = {"decision": decision, **({"reason": reason} if reason else {})}
    found = context.api().post(f"/api/approvals/{approval_id}/decision", body)
    if as_json:
        output.emit_json(found)
    else:
        click.echo(f"{found['approval']['status']} {approval_id}" + ("; the run continues" if found["run_resumed"] else ""))


@approval.command("approve")
@click.argument("approval_id")
@click.option("--reason", default=None)
@json_option
@pass_context
def approval_approve(context: Context, approval_id: str, reason: str | None, as_json: bool) -> None:
    _decide(context, approval_id, "approve", reason, as_json)


@approval.command("deny")
@click.argument("approval_id")
@click.option("--reason", default=None, help="Told to the model.")
@json_option
@pass_context
def approval_deny(context: Context, approval_id: str, reason: str | None, as_json: bool) -> None:
    _decide(context, approval_id, "deny", reason, as_json)


@cli.command()
@click.argument("identifier")
@json_option
@pass_context
def trace(context: Context, identifier: str, as_json: bool) -> None:
    """The span tree of a RUN or a SESSION: timings, tokens, cost, cache status."""
    from orchestrator.cli.trace import fetch_spans, print_tree

    kind, found, summary = fetch_spans(context.api(), identifier)
    if as_json:
        output.emit_json({"kind": kind[:-1], "spans": found, "summary": summary})
    else:
        print_tree(found, summary)


workflows.register(cli, pass_context, json_option)
subagents.register(cli, pass_context, json_option)
model.register(cli, pass_context, json_option)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(EXIT_USAGE)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)
    except CliError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except ConfigurationError as error:
        click.echo(str(error), err=True)
        sys.exit(EXIT_USAGE)
    except ServiceError as error:
        click.echo(f"error: {error.message}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    except OrchestratorError as error:  # from local commands (admin, db)
        click.echo(f"error: {error.message}", err=True)
        if isinstance(error, NotFoundError):
            sys.exit(EXIT_NOT_FOUND)
        sys.exit(EXIT_AUTH if isinstance(error, PermissionDeniedError) else EXIT_REJECTED)
