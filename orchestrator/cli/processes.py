"""`boocode up`, `boocode web`, `boocode worker`: the server's processes, started on this machine.

`up` supervises everything (orchestrator/cli/up.py); `web` and `worker` replace this process with
gunicorn or Celery (exec), so a process manager such as systemd sees the real server.
"""

from __future__ import annotations

import os
import sys

import click

from orchestrator.cli.context import Context, pass_context


@click.command()
@pass_context
def up(context: Context) -> None:
    """Single-machine mode: web + a worker, plus PostgreSQL/Redis when not configured. Ctrl-C stops all."""
    from orchestrator.cli.up import run_up  # not at the top: client commands need not import the server

    sys.exit(run_up(context.settings))


@click.command()
@pass_context
def web(context: Context) -> None:
    """Run the web front end under gunicorn (needs DATABASE_URL and REDIS_URL)."""
    from orchestrator.cli.up import web_command

    context.settings.require_services()
    command = web_command(context.settings)
    os.execvp(command[0], command)


@click.command()
@pass_context
def worker(context: Context) -> None:
    """Run a Celery worker on every queue (needs DATABASE_URL and REDIS_URL)."""
    from orchestrator.cli.up import worker_command

    context.settings.require_services()
    command = worker_command(context.settings)
    os.execvp(command[0], command)
