"""`boocode session …`: chat sessions — create, list, read, send a message (with images), watch live."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from orchestrator.cli import output
from orchestrator.cli.client import ApiClient
from orchestrator.cli.context import Context, json_option, pass_context


@click.group()
def session() -> None:
    """Chat sessions."""


@session.command("list")
@click.option("--project", "project_id", required=True)
@json_option
@pass_context
def session_list(context: Context, project_id: str, as_json: bool) -> None:
    found = context.api().get(f"/api/projects/{project_id}/sessions")["sessions"]
    output.emit(found, as_json, output.table("id", "title", "last_seq", "updated_at"))


@session.command("create")
@click.option("--project", "project_id", required=True)
@click.option("--title", default="New session")
@json_option
@pass_context
def session_create(context: Context, project_id: str, title: str, as_json: bool) -> None:
    created = context.api().post(f"/api/projects/{project_id}/sessions", {"title": title})["session"]
    output.emit(created, as_json, output.emit_record)


def print_conversation(shown: dict[str, Any]) -> None:
    output.emit_record(shown["session"])
    for message in shown["messages"]:
        click.echo(f"\n[{message['seq']}] " + output.render_parts(message["role"], message["parts"]))


@session.command("show")
@click.argument("session_id")
@json_option
@pass_context
def session_show(context: Context, session_id: str, as_json: bool) -> None:
    """The session and its messages."""
    api = context.api()
    found = api.get(f"/api/sessions/{session_id}")["session"]
    messages = api.get(f"/api/sessions/{session_id}/messages")["messages"]
    output.emit({"session": found, "messages": messages}, as_json, print_conversation)


def upload_images(api: ApiClient, session_id: str, images: tuple[Path, ...]) -> list[dict[str, str]]:
    """Image parts for a message: each file is uploaded first and referred to by its blob."""
    parts = []
    for image in images:
        uploaded = api.request("POST", f"/api/sessions/{session_id}/attachments", content=image.read_bytes(),
                               content_type="application/octet-stream")
        parts.append({"type": "image", "blob": uploaded["blob"], "media_type": uploaded["media_type"]})
    return parts


def print_queued(created: dict[str, Any]) -> None:
    click.echo(f"queued run {created['run']['id']}")


@session.command("send")
@click.argument("session_id")
@click.argument("text")
@click.option("--image", "images", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Attach an image (PNG, JPEG, GIF, WebP); may be repeated.")
@json_option
@pass_context
def session_send(context: Context, session_id: str, text: str, images: tuple[Path, ...], as_json: bool) -> None:
    """Post a user message (with optional images); prints the queued run."""
    api = context.api()
    parts = [{"type": "text", "text": text}, *upload_images(api, session_id, images)]
    created = api.post(f"/api/sessions/{session_id}/messages", {"parts": parts})
    output.emit(created, as_json, print_queued)


@session.command("watch")
@click.argument("session_id")
@click.option("--since", default=0, type=click.IntRange(min=0), help="Replay events after this seq.")
@click.option("--until-run", default=None, help="Exit once this run has finished.")
@json_option
@pass_context
def session_watch(context: Context, session_id: str, since: int, until_run: str | None, as_json: bool) -> None:
    """Tail the session's events over the WebSocket (replay first, then live). Ctrl-C to stop."""
    try:
        for event in context.api().stream_events(session_id, since):
            # one JSON document per line (not `emit`'s indented JSON): a stream that scripts read line by line
            click.echo(json.dumps(event, default=str) if as_json else output.describe_event(event))
            if until_run and event["type"] == "run.finished" and event.get("run_id") == until_run:
                return
    except KeyboardInterrupt:
        return
