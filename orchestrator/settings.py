"""The one settings object.

Settings come from environment variables, optionally layered over a TOML file named by
`BOOCODE_CONFIG` (environment wins). They are parsed and validated once; every problem is reported
together, each naming the variable to set. This module is the only place that reads `os.environ`;
everything else receives a `Settings` explicitly.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, MutableMapping

from orchestrator.errors import ConfigurationError


def _parse_text(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _parse_float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"must be a number, got {raw!r}") from None


def _parse_positive_float(raw: str) -> float:
    value = _parse_float(raw)
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {raw!r}")
    return value


def _parse_non_negative_float(raw: str) -> float:
    value = _parse_float(raw)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {raw!r}")
    return value


def _parse_positive_int(raw: str) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValueError(f"must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {raw!r}")
    return value


def _parse_non_negative_int(raw: str) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValueError(f"must be a whole number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"must be 0 or more, got {raw!r}")
    return value


def _parse_port(raw: str) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValueError(f"must be a port number, got {raw!r}") from None
    if not 0 < value < 65536:
        raise ValueError(f"must be between 1 and 65535, got {raw!r}")
    return value


def _parse_database_url(raw: str) -> str:
    value = raw.strip()
    if value.startswith("postgres://"):
        value = "postgresql://" + value[len("postgres://"):]
    if value.startswith("postgresql://"):
        value = "postgresql+psycopg://" + value[len("postgresql://"):]
    if not value.startswith("postgresql+psycopg://"):
        raise ValueError(f"must be a PostgreSQL URL (postgresql://user@host:5432/db), got {raw!r}")
    return value


def _parse_redis_url(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"must be a Redis URL (redis://host:6379/0 or unix:///path/redis.sock), got {raw!r}")
    return value


def _parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _parse_path(raw: str) -> Path:
    return Path(raw).expanduser()


def _parse_bool(raw: str) -> bool:
    value = str(raw).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def _parse_http_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s) URL such as https://api.openai.com/v1, got {raw!r}")
    return value


def default_data_dir() -> Path:
    """Where state lives when BOOCODE_DATA_DIR is not set (`boocode up` shows the variable only when it is)."""
    return Path("~/.boocode").expanduser()


@dataclass(frozen=True)
class Settings:
    """Typed, frozen configuration. See `FIELDS` for the variable behind each attribute."""

    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8765
    api_url: str | None = None
    api_token: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    redis_prefix: str = "boocode"
    lease_seconds: float = 15.0
    recovery_interval_seconds: float = 5.0
    # How often the beat process asks a worker to fire due flow schedules (docs/flows.md, Schedules).
    beat_interval_seconds: float = 10.0
    requeue_after_seconds: float = 300.0
    visibility_timeout_seconds: int = 3600
    # The poison-run guard: takeovers in a row without progress before a run fails `worker_crashed`.
    max_worker_crashes: int = 3
    # Fault-injection seam for tests and drills: a worker waits this long after a task arrives before it
    # claims the run, which makes the window "received but not claimed" wide enough to kill a worker in.
    claim_delay_seconds: float = 0.0
    # How long a task may take its run from one turn to the next while no other task waits for a
    # worker (ADR 0006); 0 hands the lease back after every turn (one turn per task).
    turn_slice_seconds: float = 5.0
    # A streaming answer's deltas are committed (and so sent to clients) at most once per this interval.
    stream_flush_seconds: float = 0.1
    max_request_bytes: int = 1024 * 1024
    max_image_bytes: int = 20 * 1024 * 1024
    # The web edge: proxies trusted for X-Forwarded-* (web/proxies.py), sign-in throttling
    # (web/throttle.py) and browser sessions, which end on the server (web/blueprints/browser.py).
    trusted_proxies: int = 0
    login_failures_per_user: int = 5
    login_failures_per_address: int = 20
    login_window_seconds: float = 60.0
    browser_session_seconds: float = 12 * 3600.0
    browser_session_idle_seconds: float = 2 * 3600.0
    worker_concurrency: int = 2
    web_threads: int = 512  # each open WebSocket holds one (docs/events.md); gunicorn makes them as needed
    ws_poll_seconds: float = 2.0
    # Session WebSockets (web/access.py): caps, and how often an open one re-checks its access.
    ws_max_per_user: int = 8
    ws_max_per_process: int | None = None  # default: web_threads minus 4 kept for REST and /health
    ws_access_check_seconds: float = 1.0
    log_level: str = "info"
    log_format: str = "text"
    # The server's default model provider (any OpenAI-compatible endpoint).
    model_base_url: str | None = None
    model_api_key: str | None = field(default=None, repr=False)
    model_name: str | None = None
    model_context_window: int = 128_000
    model_vision: bool = False
    model_max_attempts: int = 4
    model_timeout_seconds: float = 120.0
    model_cache_lifetime_seconds: float = 300.0
    model_tool_mode: str = "native"  # "json": replies constrained to a JSON tool call or answer
    model_require_tool_first: bool = False
    model_temperature: float | None = None
    model_retry_on_timeout: bool = True  # off for a one-request-at-a-time server (`boocode up`'s local model)
    # The embedded model `boocode up` serves when no model is configured (see docs/local-model.md).
    local_model: str = "1.5b"
    local_model_port: int = 8766
    local_model_context: int = 8192
    local_model_dir: Path | None = None  # where fetched models live; default <data_dir>/models
    local_model_threads: int | None = None  # the model server's threads; default max(1, CPUs // 2)
    local_model_warm_up: bool = True  # compute the agent's prompt prefix once at start-up
    agent_max_steps: int = 25
    # Workflows: agents in flight per run (a run may ask for fewer), agents per run, and the sandbox.
    workflow_concurrency: int = 8
    workflow_max_agents: int = 1000
    workflow_script_timeout_seconds: float = 2.0
    workflow_memory_mb: int = 128
    workflow_sandbox_processes: int = 2  # sandbox processes per web/worker process (scripts run there)
    # Background subagents: how many may work at once on this server, and for one user.
    subagent_concurrency: int = 8
    subagent_user_concurrency: int = 4
    tool_path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    # The sandbox of every process an agent starts (orchestrator/sandbox.py, docs/security.md).
    sandbox: str = "bwrap"  # "off": unsandboxed, for machines without user namespaces (logged loudly)
    sandbox_allow_network: bool = False  # lets a project's policy ask for the network in its commands
    sandbox_max_processes: int = 256
    sandbox_max_memory_mb: int = 4096
    sandbox_max_cpu_seconds: int = 900
    sandbox_max_file_mb: int = 1024
    config_file: Path | None = None  # BOOCODE_CONFIG, kept so the sandbox can hide it

    @property
    def models_dir(self) -> Path:
        return self.local_model_dir or self.data_dir / "models"

    @property
    def base_url(self) -> str:
        """Where clients reach the API: `BOOCODE_URL`, else the local bind address."""
        return self.api_url or f"http://{self.host}:{self.port}"

    def require_services(self) -> None:
        """Web and worker processes need both services; `boocode up` provides them when unset."""
        problems = _missing_services(self.database_url, self.redis_url)
        if problems:
            raise ConfigurationError(problems)

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def to_environment(self) -> dict[str, str]:
        """The environment variables that reproduce these settings in a child process."""
        environment = {}
        for name, (variable, _) in FIELDS.items():
            value = getattr(self, name)
            if value is not None:
                environment[variable] = str(value)
        return environment


# attribute -> (environment variable, parser)
FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "database_url": ("DATABASE_URL", _parse_database_url),
    "redis_url": ("REDIS_URL", _parse_redis_url),
    "data_dir": ("BOOCODE_DATA_DIR", _parse_path),
    "host": ("BOOCODE_HOST", _parse_text),
    "port": ("BOOCODE_PORT", _parse_port),
    "api_url": ("BOOCODE_URL", _parse_text),
    "api_token": ("BOOCODE_TOKEN", _parse_text),
    "secret_key": ("BOOCODE_SECRET_KEY", _parse_text),
    "redis_prefix": ("BOOCODE_REDIS_PREFIX", _parse_text),
    "lease_seconds": ("BOOCODE_LEASE_SECONDS", _parse_positive_float),
    "recovery_interval_seconds": ("BOOCODE_RECOVERY_INTERVAL_SECONDS", _parse_positive_float),
    "beat_interval_seconds": ("BOOCODE_BEAT_INTERVAL_SECONDS", _parse_positive_float),
    "requeue_after_seconds": ("BOOCODE_REQUEUE_AFTER_SECONDS", _parse_positive_float),
    "visibility_timeout_seconds": ("BOOCODE_VISIBILITY_TIMEOUT_SECONDS", _parse_positive_int),
    "max_worker_crashes": ("BOOCODE_MAX_WORKER_CRASHES", _parse_positive_int),
    "claim_delay_seconds": ("BOOCODE_CLAIM_DELAY_SECONDS", _parse_non_negative_float),
    "turn_slice_seconds": ("BOOCODE_TURN_SLICE_SECONDS", _parse_non_negative_float),
    "stream_flush_seconds": ("BOOCODE_STREAM_FLUSH_SECONDS", _parse_positive_float),
    "max_request_bytes": ("BOOCODE_MAX_REQUEST_BYTES", _parse_positive_int),
    "max_image_bytes": ("BOOCODE_MAX_IMAGE_BYTES", _parse_positive_int),
    "trusted_proxies": ("BOOCODE_TRUSTED_PROXIES", _parse_non_negative_int),
    "login_failures_per_user": ("BOOCODE_LOGIN_FAILURES_PER_USER", _parse_positive_int),
    "login_failures_per_address": ("BOOCODE_LOGIN_FAILURES_PER_ADDRESS", _parse_positive_int),
    "login_window_seconds": ("BOOCODE_LOGIN_WINDOW_SECONDS", _parse_positive_float),
    "browser_session_seconds": ("BOOCODE_BROWSER_SESSION_SECONDS", _parse_positive_float),
    "browser_session_idle_seconds": ("BOOCODE_BROWSER_SESSION_IDLE_SECONDS", _parse_positive_float),
    "worker_concurrency": ("BOOCODE_WORKER_CONCURRENCY", _parse_positive_int),
    "web_threads": ("BOOCODE_WEB_THREADS", _parse_positive_int),
    "ws_poll_seconds": ("BOOCODE_WS_POLL_SECONDS", _parse_positive_float),
    "ws_max_per_user": ("BOOCODE_WS_MAX_PER_USER", _parse_positive_int),
    "ws_max_per_process": ("BOOCODE_WS_MAX_PER_PROCESS", _parse_positive_int),
    "ws_access_check_seconds": ("BOOCODE_WS_ACCESS_CHECK_SECONDS", _parse_positive_float),
    "log_level": ("BOOCODE_LOG_LEVEL", _parse_choice("debug", "info", "warning", "error")),
    "log_format": ("BOOCODE_LOG_FORMAT", _parse_choice("text", "json")),
    "model_base_url": ("BOOCODE_MODEL_BASE_URL", _parse_http_url),
    "model_api_key": ("BOOCODE_MODEL_API_KEY", _parse_text),
    "model_name": ("BOOCODE_MODEL", _parse_text),
    "model_context_window": ("BOOCODE_MODEL_CONTEXT_WINDOW", _parse_positive_int),
    "model_vision": ("BOOCODE_MODEL_VISION", _parse_bool),
    "model_max_attempts": ("BOOCODE_MODEL_MAX_ATTEMPTS", _parse_positive_int),
    "model_timeout_seconds": ("BOOCODE_MODEL_TIMEOUT_SECONDS", _parse_positive_float),
    "model_cache_lifetime_seconds": ("BOOCODE_MODEL_CACHE_LIFETIME_SECONDS", _parse_positive_float),
    "model_tool_mode": ("BOOCODE_MODEL_TOOL_MODE", _parse_choice("native", "json")),
    "model_require_tool_first": ("BOOCODE_MODEL_REQUIRE_TOOL_FIRST", _parse_bool),
    "model_temperature": ("BOOCODE_MODEL_TEMPERATURE", _parse_non_negative_float),
    "model_retry_on_timeout": ("BOOCODE_MODEL_RETRY_ON_TIMEOUT", _parse_bool),
    "local_model": ("BOOCODE_LOCAL_MODEL", _parse_choice("1.5b", "0.5b", "off")),
    "local_model_port": ("BOOCODE_LOCAL_MODEL_PORT", _parse_port),
    "local_model_context": ("BOOCODE_LOCAL_MODEL_CONTEXT", _parse_positive_int),
    "local_model_dir": ("BOOCODE_LOCAL_MODEL_DIR", _parse_path),
    "local_model_threads": ("BOOCODE_LOCAL_MODEL_THREADS", _parse_positive_int),
    "local_model_warm_up": ("BOOCODE_LOCAL_MODEL_WARM_UP", _parse_bool),
    "agent_max_steps": ("BOOCODE_AGENT_MAX_STEPS", _parse_positive_int),
    "tool_path": ("BOOCODE_TOOL_PATH", _parse_text),
    "sandbox": ("BOOCODE_SANDBOX", _parse_choice("bwrap", "off")),
    "sandbox_allow_network": ("BOOCODE_SANDBOX_ALLOW_NETWORK", _parse_bool),
    "sandbox_max_processes": ("BOOCODE_SANDBOX_MAX_PROCESSES", _parse_positive_int),
    "sandbox_max_memory_mb": ("BOOCODE_SANDBOX_MAX_MEMORY_MB", _parse_positive_int),
    "sandbox_max_cpu_seconds": ("BOOCODE_SANDBOX_MAX_CPU_SECONDS", _parse_positive_int),
    "sandbox_max_file_mb": ("BOOCODE_SANDBOX_MAX_FILE_MB", _parse_positive_int),
    "workflow_concurrency": ("BOOCODE_WORKFLOW_CONCURRENCY", _parse_positive_int),
    "workflow_max_agents": ("BOOCODE_WORKFLOW_MAX_AGENTS", _parse_positive_int),
    "workflow_script_timeout_seconds": ("BOOCODE_WORKFLOW_SCRIPT_TIMEOUT_SECONDS", _parse_positive_float),
    "workflow_memory_mb": ("BOOCODE_WORKFLOW_MEMORY_MB", _parse_positive_int),
    "workflow_sandbox_processes": ("BOOCODE_WORKFLOW_SANDBOX_PROCESSES", _parse_positive_int),
    "subagent_concurrency": ("BOOCODE_SUBAGENT_CONCURRENCY", _parse_positive_int),
    "subagent_user_concurrency": ("BOOCODE_SUBAGENT_USER_CONCURRENCY", _parse_positive_int),
}

# Values that must never be logged, traced or passed to tools.
SECRET_FIELDS = frozenset({"model_api_key", "database_url", "redis_url", "api_token", "secret_key"})


def scrub_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Remove the secret variables from this process' environment once settings are loaded, so no
    child started later (git, a model server, a command in `BOOCODE_SANDBOX=off` mode) inherits them."""
    target = os.environ if environ is None else environ
    for name in SECRET_FIELDS:
        target.pop(FIELDS[name][0], None)


def _missing_services(database_url: str | None, redis_url: str | None) -> list[str]:
    problems = []
    if not database_url:
        problems.append("DATABASE_URL is not set: point it at PostgreSQL, or start with `boocode up`, "
                        "which provides PostgreSQL itself")
    if not redis_url:
        problems.append("REDIS_URL is not set: point it at Redis, or start with `boocode up`, "
                        "which provides Redis itself")
    return problems


def load_settings(environ: Mapping[str, str] | None = None, *, services_required: bool = False,
                  **overrides: Any) -> Settings:
    """Build `Settings` from a config file and the environment; raise one error listing every problem.

    `overrides` (already-typed values) win over both; tests and `boocode up` use them. With
    `services_required` (web and worker processes) missing service URLs join the same report.
    """
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    values: dict[str, Any] = {}

    config_path = environ.get("BOOCODE_CONFIG")
    file_values: dict[str, Any] = {}
    if config_path:
        try:
            file_values = tomllib.loads(Path(config_path).expanduser().read_text())
        except OSError as error:
            problems.append(f"BOOCODE_CONFIG={config_path}: cannot read the file ({error.strerror})")
        except tomllib.TOMLDecodeError as error:
            problems.append(f"BOOCODE_CONFIG={config_path}: not valid TOML ({error})")
        unknown = sorted(set(file_values) - set(FIELDS))
        if unknown:
            problems.append(f"BOOCODE_CONFIG={config_path}: unknown keys {', '.join(unknown)}; "
                            f"known keys are {', '.join(FIELDS)}")

    for name, (variable, parse) in FIELDS.items():
        if name in overrides:
            continue
        if variable in environ and environ[variable] != "":
            raw, origin = environ[variable], variable
        elif name in file_values:
            raw, origin = str(file_values[name]), f"{name} in {config_path}"
        else:
            continue
        try:
            values[name] = parse(raw)
        except ValueError as error:
            problems.append(f"{origin} {error}; set {variable} to fix it")

    if config_path and "config_file" not in overrides:
        values["config_file"] = Path(config_path).expanduser()
    values.update(overrides)
    if services_required:
        problems += _missing_services(values.get("database_url"), values.get("redis_url"))
    if problems:
        raise ConfigurationError(problems)
    return Settings(**values)
