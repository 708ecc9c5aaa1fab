"""What every command is handed: the settings (loaded on first use), the API client, and `--json`.

A command takes `context: Context` through `@pass_context` and calls `context.api()` for the server;
it never builds an `ApiClient` or loads settings itself, so `--url` / `--token` / BOOCODE_* mean the
same thing everywhere.
"""

from __future__ import annotations

import click

from orchestrator.cli.client import ApiClient
from orchestrator.settings import Settings, load_settings

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


class Context:
    """The root group's `--url` and `--token`; settings are loaded only when a command needs them, so
    `--help` and usage errors work without a valid configuration."""

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
