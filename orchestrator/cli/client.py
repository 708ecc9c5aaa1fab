"""HTTP and WebSocket access to a BooCode server, with errors turned into CLI exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import simple_websocket

from orchestrator.cli import EXIT_AUTH, EXIT_NOT_FOUND, EXIT_REJECTED, EXIT_SERVER, EXIT_UNREACHABLE
from orchestrator.settings import Settings

CREDENTIALS_FILE = "credentials.json"


class CliError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def credentials_path(settings: Settings) -> Path:
    return settings.data_dir / CREDENTIALS_FILE


def save_credentials(settings: Settings, url: str, token: str) -> Path:
    path = credentials_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(json.dumps({"url": url, "token": token}, indent=2) + "\n")
    return path


def load_credentials(settings: Settings) -> dict[str, str]:
    path = credentials_path(settings)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def missing_token_message(path: Path) -> str:
    """Where we looked, so that a shell with another BOOCODE_DATA_DIR than `boocode up`'s can tell."""
    if not path.exists():
        found = "does not exist"
    else:
        try:
            found = "has no token" if isinstance(json.loads(path.read_text()), dict) else "is not a credentials file"
        except OSError as error:
            found = f"cannot be read ({error.strerror})"
        except ValueError:
            found = "is not valid JSON"
    return (f"no API token: no --token, no BOOCODE_TOKEN, and {path} {found}. If `boocode up` runs with another "
            f"data directory, point this shell at it (export BOOCODE_DATA_DIR=<the directory `up` printed>); "
            f"otherwise run `boocode up` once (it saves a token there), or pass --token / set BOOCODE_TOKEN")


def status_exit_code(status: int) -> int:
    if status in (401, 403):
        return EXIT_AUTH
    if status == 404:
        return EXIT_NOT_FOUND
    if 400 <= status < 500:
        return EXIT_REJECTED
    return EXIT_SERVER


class ApiClient:
    """Flags win over BOOCODE_URL/BOOCODE_TOKEN, which win over the credentials `boocode up` saved."""

    def __init__(self, settings: Settings, url: str | None = None, token: str | None = None) -> None:
        saved = load_credentials(settings)
        self.url = (url or settings.api_url or saved.get("url") or settings.base_url).rstrip("/")
        self.token = token or settings.api_token or saved.get("token")
        self._credentials = credentials_path(settings)
        self._http = httpx.Client(base_url=self.url, timeout=30.0)

    def _headers(self) -> dict[str, str]:
        if not self.token:
            raise CliError(missing_token_message(self._credentials), EXIT_AUTH)
        return {"Authorization": f"Bearer {self.token}"}

    def request(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None,
                content: bytes | None = None, content_type: str | None = None) -> Any:
        params = {key: value for key, value in (params or {}).items() if value is not None}
        headers = self._headers()
        if content_type:
            headers["Content-Type"] = content_type
        try:
            response = self._http.request(method, path, json=body if content is None else None, content=content,
                                          params=params, headers=headers)
        except httpx.TransportError as error:
            raise CliError(f"cannot reach the server at {self.url}: {error}; is `boocode up` running? "
                           f"(set BOOCODE_URL to point elsewhere)", EXIT_UNREACHABLE) from None
        if response.status_code >= 400:
            try:
                failure = response.json()["error"]
                message = f"{failure['message']} ({failure['code']}, HTTP {response.status_code})"
                if failure.get("details"):
                    message += f"\n  details: {json.dumps(failure['details'])}"
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {response.status_code}: {response.text[:300]}"
            raise CliError(message, status_exit_code(response.status_code))
        return response.json() if response.status_code != 204 else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body if body is not None else {})

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body=body)

    def stream_events(self, session_id: str, since: int) -> Iterator[dict[str, Any]]:
        """Yield events forever (replay first, then live), reconnecting from the last seq after a drop."""
        ws_url = self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        last = since
        while True:
            try:
                # the stubs say bytes headers; simple-websocket hands them to wsproto, which takes str too
                socket = simple_websocket.Client.connect(f"{ws_url}/ws/sessions/{session_id}?since={last}",
                                                         headers=self._headers())  # type: ignore[arg-type]
            except (ConnectionError, OSError) as error:
                raise CliError(f"cannot open the event stream at {ws_url}: {error}", EXIT_UNREACHABLE) from None
            except simple_websocket.ConnectionError as error:
                status = getattr(error, "status_code", None) or 500
                raise CliError(f"the server refused the event stream (HTTP {status})", status_exit_code(status)) \
                    from None
            try:
                while True:
                    frame = socket.receive()
                    if frame is None:  # only when a timeout passes, and none is given
                        continue
                    event = json.loads(frame)
                    last = event["seq"]
                    yield event
            except simple_websocket.ConnectionClosed:
                continue
            finally:
                socket.close()
