"""`boocode db …`: Alembic migrations on DATABASE_URL, or on the embedded PostgreSQL when it is unset.

`local_database` is also what `boocode admin` uses: local commands talk to the database directly.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import click

from orchestrator.cli.context import Context, pass_context
from orchestrator.settings import Settings


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


@click.group()
def db() -> None:
    """Database migrations."""


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
