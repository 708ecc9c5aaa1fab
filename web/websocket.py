"""`/ws/sessions/<id>?since=<seq>`: replay from Postgres, then live events from Redis, by `seq`.

    subscribe to the session's Redis channel              (first, so nothing published later is missed)
    send every event with seq > since from Postgres       (the replay)
    for each live event:
        seq <= last sent      -> drop (already sent during replay: the hand-over duplicate)
        seq >  last sent + 1  -> send the gap from Postgres first (a lost pub/sub message)
        send it
    when Redis is quiet for ws_poll_seconds, look in Postgres anyway (a lost last message)

Commit order equals seq order (see orchestrator/store/events.py), so Postgres always holds every
seq below one that was published; the client receives each event exactly once, in order.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from flask import Blueprint, request
from flask_sock import Sock

from orchestrator.domain.enums import Role
from orchestrator.store import events
from orchestrator.tracing.publisher import encode_event, session_channel
from web.auth import load_visible_session
from web.errors import HttpError
from web.state import state

bp = Blueprint("websocket", __name__)
sock = Sock()
REPLAY_PAGE = 500


@bp.before_request
def authorize_session() -> None:
    """Checked before the handshake, so a refused client gets a plain HTTP 401/404 and no socket."""
    session_id = (request.view_args or {}).get("session_id")
    if session_id is None:
        return
    with state().db.transaction() as session:
        load_visible_session(session, session_id, Role.VIEWER)
    parse_since()


def parse_since() -> int:
    raw = request.args.get("since", "0")
    if not raw.isdigit():
        raise HttpError(422, "validation_failed", "since must be a whole number (the last seq you received)",
                        [{"path": "since", "message": "not a non-negative integer"}])
    return int(raw)


@sock.route("/ws/sessions/<uuid:session_id>", bp=bp)
def session_events(ws: Any, session_id: uuid.UUID) -> None:
    stream = EventStream(ws, session_id)
    stream.run(parse_since())


class EventStream:
    def __init__(self, ws: Any, session_id: uuid.UUID) -> None:
        self.ws = ws
        self.session_id = session_id
        self.state = state()

    def run(self, since: int) -> None:
        pubsub = self.state.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(session_channel(self.state.settings.redis_prefix, self.session_id))
        try:
            last = self.replay(since)
            quiet_since = time.monotonic()
            while True:
                message = pubsub.get_message(timeout=0.25)
                if message is not None and message.get("type") == "message":
                    quiet_since = time.monotonic()
                    last = self.forward(json.loads(message["data"]), last)
                elif time.monotonic() - quiet_since >= self.state.settings.ws_poll_seconds:
                    quiet_since = time.monotonic()
                    last = self.replay(last)
                self.ws.receive(timeout=0)  # raises ConnectionClosed once the client has gone
        finally:
            pubsub.close()

    def forward(self, event: dict[str, Any], last: int) -> int:
        seq = event["seq"]
        if seq <= last:
            return last
        if seq > last + 1:
            last = self.replay(last, until=seq - 1)
        if seq == last + 1:
            self.ws.send(encode_event(event))
            return seq
        return self.replay(last)

    def replay(self, after: int, until: int | None = None) -> int:
        while True:
            with self.state.db.transaction() as session:
                page = events.list_events(session, self.session_id, after_seq=after, until_seq=until,
                                          limit=REPLAY_PAGE)
            for event in page:
                self.ws.send(encode_event(event))
                after = event["seq"]
            if len(page) < REPLAY_PAGE:
                return after
