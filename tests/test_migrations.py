"""Migrations: upgrade from an empty database, downgrade one step, and match the models."""

import uuid

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, pool

from orchestrator import migrate
from orchestrator.store.models import Base
from tests.conftest import create_database, drop_database

TABLES = {"users", "api_tokens", "projects", "project_members", "sessions", "messages", "runs", "steps", "events",
          "project_blobs",
          "blobs", "spans", "approvals", "workflow_calls", "workflow_logs", "flow_steps", "flow_triggers",
          "flow_schedules", "flow_firings"}


def _tables(url: str) -> set[str]:
    return set(_schema(url))


def _schema(url: str) -> dict[str, frozenset[str]]:
    """Tables with their columns and indexes: what a migration step changes."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        inspector = inspect(engine)
        return {table: frozenset(column["name"] for column in inspector.get_columns(table))
                | frozenset(f"index {index['name']}" for index in inspector.get_indexes(table))
                for table in inspector.get_table_names() if table != "alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_from_empty_then_downgrade_one_step_and_back(admin_postgres_url: str) -> None:
    name = f"boocode_migrations_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_postgres_url, name)
    try:
        assert _tables(url) == set()
        migrate.upgrade(url)
        head = migrate.current_revision(url)
        assert head is not None
        assert _tables(url) == TABLES
        at_head = _schema(url)
        migrate.downgrade(url, "-1")
        assert migrate.current_revision(url) not in (head, None)
        assert _schema(url) != at_head
        migrate.upgrade(url)
        assert migrate.current_revision(url) == head
        assert _schema(url) == at_head
    finally:
        drop_database(admin_postgres_url, name)


def test_migrations_match_the_models(database_url: str) -> None:
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
