"""Sessions: messages (a user message becomes a queued agent run), events, runs and probe runs.

A session still called `schemas.DEFAULT_SESSION_TITLE` takes its title from the first words of the
first message posted to it; a member can rename it at any time (`PUT …/title`).
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, request

from orchestrator.domain.enums import MessageRole, Role, RunKind
from orchestrator.domain.images import check_image, sniff_image_type
from orchestrator.domain.parts import IMAGE_MEDIA_TYPES, validate_user_parts
from orchestrator.domain.probe import validate_probe_input
from orchestrator.errors import NotFoundError
from orchestrator.store import blobs, events, runs
from orchestrator.store import sessions as chat_sessions
from web import schemas
from web.api import operation
from web.auth import current_user, load_visible_session
from web.errors import HttpError
from web.inputs import BIGINT_MAX
from web.state import state

bp = Blueprint("sessions", __name__, url_prefix="/api/sessions")
TITLE_LENGTH = 60
MESSAGE_PAGE = 200  # the default page; schemas.LIMIT caps it at 500


@operation(bp, "GET", "/<uuid:session_id>", summary="Get a session")
def get_session(session_id: uuid.UUID):
    with state().db.transaction() as session:
        return {"session": chat_sessions.serialize_session(load_visible_session(session, session_id, Role.VIEWER))}


@operation(bp, "PUT", "/<uuid:session_id>/title", summary="Rename a session (member)", body=schemas.RENAME_SESSION)
def rename_session(session_id: uuid.UUID, body):
    with state().db.transaction() as session:
        chat = load_visible_session(session, session_id, Role.MEMBER)
        chat.title = body["title"]
        return {"session": chat_sessions.serialize_session(chat)}


def title_from(parts: list[dict]) -> str | None:
    """A session's title from a message: the first words of its text, cut at a word before TITLE_LENGTH."""
    text = next((part["text"] for part in parts if part.get("type") == "text" and part.get("text", "").strip()), "")
    words = " ".join(text.split())
    if not words:
        return None
    if len(words) <= TITLE_LENGTH:
        return words
    cut = words[:TITLE_LENGTH].rsplit(" ", 1)[0] or words[:TITLE_LENGTH]
    return cut.rstrip(" ,.;:") + "…"


MESSAGES_QUERY = {
    "after": {**schemas.SEQ, "description": "only messages with a greater seq (paging forwards, oldest first)"},
    "before": {**schemas.SEQ, "description": "the newest messages with a smaller seq (paging back: the session's "
                                             "last_seq + 1 for the latest page, then each page's `next_before`)"},
    "limit": {**schemas.LIMIT, "description": f"messages per page (default {MESSAGE_PAGE})"},
    "count": {"type": "string", "enum": ["earlier"],
              "description": "`earlier`: the answer also says how many messages come before this page (`earlier`)"},
}


@operation(bp, "GET", "/<uuid:session_id>/messages", summary="List messages in order (keyset pages by seq)",
           query=MESSAGES_QUERY)
def list_messages(session_id: uuid.UUID, query):
    """A page costs its own size: `before` pages back from the newest without reading what comes before."""
    after, before, limit = query.get("after", 0), query.get("before"), query.get("limit", MESSAGE_PAGE)
    with state().db.transaction() as session:
        load_visible_session(session, session_id, Role.VIEWER)
        found = chat_sessions.list_messages(session, session_id, after_seq=after, before_seq=before, limit=limit)
        page: dict[str, Any] = {"messages": [chat_sessions.serialize_message(message) for message in found]}
        if before is not None:  # a short page reached the start of the conversation
            page["next_before"] = found[0].seq if len(found) == limit else None
        if query.get("count") == "earlier":
            below = found[0].seq if found else before if before is not None else min(after + 1, BIGINT_MAX)
            page["earlier"] = chat_sessions.count_messages_before(session, session_id, below)
        return page


@operation(bp, "POST", "/<uuid:session_id>/messages", summary="Post a user message; queues an agent run",
           body=schemas.POST_MESSAGE, status=202)
def post_message(session_id: uuid.UUID, body):
    parts = validate_user_parts(body["parts"] if "parts" in body else [{"type": "text", "text": body["text"]}])
    with state().db.transaction() as session:
        chat = load_visible_session(session, session_id, Role.MEMBER)
        run = runs.create_run(session, project_id=chat.project_id, session_id=chat.id, kind=RunKind.AGENT.value,
                              input={}, created_by=current_user().id)
        message = chat_sessions.add_message(session, chat.id, MessageRole.USER, parts, created_by=current_user().id,
                                            run_id=run.id)
        run.input = {"message_id": str(message.id)}
        if chat.title == schemas.DEFAULT_SESSION_TITLE:
            chat.title = title_from(parts) or chat.title
    state().queue.enqueue_run(run.kind, run.id)
    return {"message": chat_sessions.serialize_message(message), "run": runs.serialize_run(run)}, 202


@operation(bp, "POST", "/<uuid:session_id>/attachments", status=201,
           summary="Upload an image (the raw bytes) to attach to a message in this project; returns its blob id",
           raw_body=sorted(IMAGE_MEDIA_TYPES))
def upload_attachment(session_id: uuid.UUID):
    with state().db.transaction() as session:
        project_id = load_visible_session(session, session_id, Role.MEMBER).project_id
    request.max_content_length = state().settings.max_image_bytes
    data = request.get_data()
    media_type = sniff_image_type(data)
    if media_type is None:
        raise HttpError(415, "unsupported_media_type", "the upload is not a PNG, JPEG, GIF or WebP image "
                        "(its type is read from its bytes, not its name or Content-Type)")
    check_image(data, media_type)
    with state().db.transaction() as session:
        digest = blobs.put_project_blob(session, project_id, data, media_type)
    return {"blob": digest, "media_type": media_type, "size": len(data)}, 201


@operation(bp, "GET", "/<uuid:session_id>/attachments/<string:digest>", summary="An image attached to a message")
def download_attachment(session_id: uuid.UUID, digest: str):
    with state().db.transaction() as session:
        load_visible_session(session, session_id, Role.VIEWER)
        # unknown, not shown in this session, or another project's: one answer, so a digest is no oracle
        if not chat_sessions.session_references_blob(session, session_id, digest):
            raise NotFoundError(f"attachment {digest} is not in session {session_id}")
        blob = blobs.load_blob(session, digest)
        return Response(blob.data, mimetype=blob.media_type,
                        headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"})


@operation(bp, "GET", "/<uuid:session_id>/events", summary="Replay the session's events after a seq",
           query={"since": schemas.SEQ, "limit": schemas.LIMIT})
def list_events(session_id: uuid.UUID, query):
    with state().db.transaction() as session:
        load_visible_session(session, session_id, Role.VIEWER)
        found = events.list_events(session, session_id, after_seq=query.get("since", 0),
                                   limit=query.get("limit", 500))
        return {"events": found}


@operation(bp, "GET", "/<uuid:session_id>/runs", summary="List the session's runs, newest first",
           query={"status": schemas.RUN_STATUS, "limit": schemas.LIMIT})
def list_runs(session_id: uuid.UUID, query):
    with state().db.transaction() as session:
        load_visible_session(session, session_id, Role.VIEWER)
        found = runs.list_runs(session, session_id=session_id, status=query.get("status"),
                               limit=query.get("limit", 50))
        return {"runs": [runs.serialize_run(run) for run in found]}


@operation(bp, "POST", "/<uuid:session_id>/probes", summary="Start a probe run (a self-test of the worker pipeline)",
           body=schemas.CREATE_PROBE, status=202)
def create_probe(session_id: uuid.UUID, body):
    spec = validate_probe_input(body)
    with state().db.transaction() as session:
        chat = load_visible_session(session, session_id, Role.MEMBER)
        run = runs.create_run(session, project_id=chat.project_id, session_id=chat.id, kind=RunKind.PROBE.value,
                              input=spec, created_by=current_user().id)
    state().queue.enqueue_run(run.kind, run.id)
    return {"run": runs.serialize_run(run)}, 202
