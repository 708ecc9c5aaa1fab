"""The `boocode` root group: its `--url`/`--token`, the command groups it carries, and `main`, the one
place an error becomes a message on stderr and an exit code (see `orchestrator/cli/__init__.py`).
"""

from __future__ import annotations

import sys

import click

from orchestrator.cli import (
    EXIT_AUTH,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_REJECTED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    admin,
    approvals,
    db,
    flow_schedules,
    flows,
    model,
    processes,
    projects,
    runs,
    sessions,
    subagents,
    tokens,
    trace,
    users,
    workflows,
)
from orchestrator.cli.client import CliError
from orchestrator.cli.context import Context
from orchestrator.errors import (
    ConfigurationError,
    NotFoundError,
    OrchestratorError,
    PermissionDeniedError,
    ServiceError,
)

COMMANDS: tuple[click.Command, ...] = (
    processes.up, processes.web, processes.worker, db.db, admin.admin,  # local
    users.user, tokens.token, projects.project, sessions.session, runs.run, approvals.approval,  # the API
    trace.trace, workflows.workflow, subagents.subagent, flows.flow,
    model.model,  # the embedded local model
)


@click.group()
@click.option("--url", envvar=None, help="Server URL (default: BOOCODE_URL, then what `boocode up` saved).")
@click.option("--token", envvar=None, help="API token (default: BOOCODE_TOKEN, then what `boocode up` saved).")
@click.version_option(package_name="boocode-orchestrator")
@click.pass_context
def cli(click_context: click.Context, url: str | None, token: str | None) -> None:
    """BooCode Orchestrator: run LLM coding agents durably on a team server."""
    click_context.obj = Context(url, token)


for command in COMMANDS:
    cli.add_command(command)
flows.flow.add_command(flow_schedules.schedule)  # `boocode flow schedule`


def exit_code_for(error: OrchestratorError) -> int:
    """Local commands (admin, db) meet the core's errors directly, without HTTP statuses in between."""
    if isinstance(error, NotFoundError):
        return EXIT_NOT_FOUND
    return EXIT_AUTH if isinstance(error, PermissionDeniedError) else EXIT_REJECTED


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(EXIT_INTERRUPTED)
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
    except OrchestratorError as error:
        click.echo(f"error: {error.message}", err=True)
        sys.exit(exit_code_for(error))
