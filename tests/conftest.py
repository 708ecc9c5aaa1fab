"""Session fixtures: real PostgreSQL and Redis, a fresh database and Redis prefix per test run.

Postgres and Redis come from BOOCODE_TEST_POSTGRES_URL / BOOCODE_TEST_REDIS_URL (defaults: the
local servers on 127.0.0.1). Where those are not reachable, the suite starts the same embedded
servers `boocode up` uses, so it runs on a fresh machine too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg
import pytest
import redis

from orchestrator import migrate, services
from orchestrator.embedded import EmbeddedPostgres, EmbeddedRedis
from orchestrator.settings import Settings, load_settings
from orchestrator.store import users
from orchestrator.store.database import Database
from tests.fakes.model_server import FakeModelServer
from tests.support import Api, LiveServer, WorkerProcess

RUN_ID = uuid.uuid4().hex[:10]

pytest_plugins = ["tests.browser_support"]


def _postgres_reachable(url: str) -> bool:
    try:
        psycopg.connect(url.replace("+psycopg", ""), connect_timeout=3).close()
        return True
    except psycopg.Error:
        return False


def _redis_reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=3).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def scratch_dir() -> Iterator[Path]:
    # Short path: unix sockets live here.
    path = Path(tempfile.mkdtemp(prefix="bct-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def server_urls(scratch_dir: Path) -> Iterator[tuple[str, str]]:
    postgres_url = os.environ.get("BOOCODE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("BOOCODE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    embedded = []
    if not _postgres_reachable(postgres_url):
        postgres = EmbeddedPostgres(scratch_dir / "postgres")
        postgres_url = postgres.start().replace("/boocode?", "/postgres?")
        embedded.append(postgres)
    if not _redis_reachable(redis_url):
        redis_server = EmbeddedRedis(scratch_dir / "redis")
        redis_url = redis_server.start()
        embedded.append(redis_server)
    yield postgres_url, redis_url
    for service in reversed(embedded):
        service.stop()


@pytest.fixture(scope="session")
def admin_postgres_url(server_urls: tuple[str, str]) -> str:
    return server_urls[0]


def create_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    head, _, tail = admin_url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{tail}" if tail else "")


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(admin_postgres_url: str) -> Iterator[str]:
    name = f"boocode_test_{RUN_ID}"
    url = create_database(admin_postgres_url, name)
    migrate.upgrade(url)
    yield url
    drop_database(admin_postgres_url, name)


@pytest.fixture(scope="session")
def settings(database_url: str, server_urls: tuple[str, str], scratch_dir: Path) -> Iterator[Settings]:
    test_settings = load_settings(
        environ={},
        database_url=database_url,
        redis_url=server_urls[1],
        redis_prefix=f"bct-{RUN_ID}",
        data_dir=scratch_dir / "data",
        lease_seconds=2.0,
        recovery_interval_seconds=0.5,
        requeue_after_seconds=5.0,
        ws_poll_seconds=0.5,
        max_request_bytes=64 * 1024,
    )
    yield test_settings
    client = services.make_redis(test_settings)
    keys = list(client.scan_iter(match=f"{test_settings.redis_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="session")
def db(settings: Settings) -> Iterator[Database]:
    database = services.make_database(settings)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def live_server(settings: Settings) -> Iterator[LiveServer]:
    from web.app import create_app

    server = LiveServer(create_app(settings)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def admin_token(db: Database) -> str:
    with db.transaction() as session:
        admin = users.create_user(session, f"admin-{RUN_ID}", is_admin=True)
        _, plain = users.create_token(session, admin.id, "tests")
    return plain


@pytest.fixture(scope="session")
def api(live_server: LiveServer, admin_token: str) -> Api:
    return Api(live_server.url, admin_token)


@pytest.fixture(scope="session")
def worker(settings: Settings, scratch_dir: Path) -> Iterator[WorkerProcess]:
    """One long-lived worker shared by tests that just need runs executed."""
    process = WorkerProcess(settings, scratch_dir, name=f"shared-{RUN_ID}@localhost").start()
    yield process
    process.stop()


@pytest.fixture
def make_worker(settings: Settings, scratch_dir: Path) -> Iterator:
    started: list[WorkerProcess] = []

    def start(**kwargs) -> WorkerProcess:  # type: ignore[no-untyped-def]
        process = WorkerProcess(settings, scratch_dir, **kwargs).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def make_user(db: Database):  # type: ignore[no-untyped-def]
    def create(prefix: str = "user", is_admin: bool = False) -> tuple[str, str]:
        with db.transaction() as session:
            user = users.create_user(session, f"{prefix}-{uuid.uuid4().hex[:8]}", is_admin=is_admin)
            _, plain = users.create_token(session, user.id, "tests")
        return str(user.id), plain

    return create


@pytest.fixture
def project(api: Api, tmp_path: Path) -> dict:
    root = tmp_path / "project"
    root.mkdir()
    return api.ok("POST", "/api/projects", {"name": "test project", "root_path": str(root)}, expected=201)["project"]


@pytest.fixture
def chat(api: Api, project: dict) -> dict:
    return api.ok("POST", f"/api/projects/{project['id']}/sessions", {"title": "test session"}, expected=201)["session"]


class Stack:
    """An isolated deployment: its own database, Redis prefix, web server and admin token."""

    def __init__(self, settings: Settings, db: Database, server: LiveServer, api: Api) -> None:
        self.settings, self.db, self.server, self.api = settings, db, server, api


@contextmanager
def stacks(admin_postgres_url: str, server_urls: tuple[str, str], scratch_dir: Path) -> Iterator[Callable[..., Stack]]:
    """`make(**settings)` builds isolated stacks (database, Redis prefix, web server, admin token);
    all are torn down on exit. For module fixtures; tests use `make_stack`."""
    from web.app import create_app

    made: list[tuple[str, Stack]] = []

    def make(**overrides: Any) -> Stack:
        name = f"boocode_test_{RUN_ID}_{uuid.uuid4().hex[:6]}"
        url = create_database(admin_postgres_url, name)
        migrate.upgrade(url)
        values = dict(database_url=url, redis_url=server_urls[1], redis_prefix=f"bct-{RUN_ID}-{name[-6:]}",
                      data_dir=scratch_dir / "data", lease_seconds=2.0, recovery_interval_seconds=0.5,
                      requeue_after_seconds=5.0, ws_poll_seconds=0.5)
        values.update(overrides)
        stack_settings = load_settings(environ={}, **values)
        database = services.make_database(stack_settings)
        with database.transaction() as session:
            admin = users.create_user(session, "admin", is_admin=True)
            _, token = users.create_token(session, admin.id, "tests")
        server = LiveServer(create_app(stack_settings)).start()
        stack = Stack(stack_settings, database, server, Api(server.url, token))
        made.append((name, stack))
        return stack

    try:
        yield make
    finally:
        for name, stack in made:
            stack.server.stop()
            stack.db.dispose()
            drop_database(admin_postgres_url, name)


@pytest.fixture
def make_stack(admin_postgres_url: str, server_urls: tuple[str, str], scratch_dir: Path):  # type: ignore[no-untyped-def]
    """Stacks no shared worker can see, for tests that must control exactly which worker runs what."""
    with stacks(admin_postgres_url, server_urls, scratch_dir) as make:
        yield make


def new_session(api: Api, root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    project = api.ok("POST", "/api/projects", {"name": "p", "root_path": str(root)}, expected=201)["project"]
    return api.ok("POST", f"/api/projects/{project['id']}/sessions", {"title": "s"}, expected=201)["session"]


@pytest.fixture
def fake() -> Iterator[FakeModelServer]:
    """A fake OpenAI-compatible model server on a real socket (tests/fakes/model_server.py)."""
    server = FakeModelServer().start()
    yield server
    server.stop()


@pytest.fixture
def agent(make_stack, fake: FakeModelServer, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A stack whose workers use the fake model; returns (stack, api, chat, project root, start_worker)."""
    stack = make_stack(model_base_url=fake.base_url, model_name="gpt-4o-mini", model_api_key="sk-fake-secret",
                       agent_max_steps=6)
    root = tmp_path / "root"
    chat = new_session(stack.api, root)
    (root / "README.md").write_text("# Demo\nversion = 1\n")
    workers: list[WorkerProcess] = []

    def start_worker(name: str = "agent") -> WorkerProcess:
        worker = WorkerProcess(stack.settings, tmp_path, name=f"{name}-{len(workers)}@localhost").start()
        workers.append(worker)
        return worker

    yield stack, stack.api, chat, root, start_worker
    for worker in workers:
        worker.stop()
