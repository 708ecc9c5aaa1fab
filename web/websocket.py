"""`/ws/sessions/<id>?since=<seq>`: replay from Postgres, then live events from Redis, by `seq`,
for as long as the caller keeps access.

    before the handshake (plain HTTP errors, no socket):
        authenticated (web/auth.py) and a viewer of the session's project, else 401/404
        since is a whole number, else 422
        a slot under the per-user and per-process caps (web/access.py), else 429
    subscribe to the session's Redis channel              (first, so nothing published later is missed)
    send every event with seq > since from Postgres       (the replay)
    loop:
        every ws_access_check_seconds: access ended  -> close with 4401 / 4403 / 4404 and stop
        live event:
            seq <= last sent      -> drop (already sent during replay: the hand-over duplicate)
            seq >  last sent + 1  -> send the gap from Postgres first (a lost pub/sub message)
            send it
        when Redis is quiet for ws_poll_seconds, look in Postgres anyway (a lost last message)
        Redis down (at the start or later): poll Postgres every ws_poll_seconds, resubscribe every
        2 s, and replay the gap once it is back (LiveFeed); Postgres alone is enough to lose nothing
    the request ends however it ends (client gone, close, error) -> the slot is released

Commit order equals seq order (see orchestrator/store/events.py), so Postgres always holds every
seq below one that was published; the client receives each event exactly once, in order.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from flask import Blueprint, g, request
from flask_sock import Sock
from redis.exceptions import RedisError
from simple_websocket import ConnectionClosed

from orchestrator.domain.enums import Role
from orchestrator.store import events
from orchestrator.tracing.publisher import encode_event, session_channel
from web.access import Credential, Denied, Grant, check_access
from web.auth import SESSION_COOKIE, current_user, load_visible_session, presented_token
from web.errors import HttpError
from web.state import state

logger = logging.getLogger(__name__)
bp = Blueprint("websocket", __name__)
sock = Sock()
REPLAY_PAGE = 500
RESUBSCRIBE_SECONDS = 2.0
SEQ_MAX = 2 ** 63 - 1  # events.seq is a bigint
SERVER_ERROR = 1011


@bp.before_request
def admit_socket() -> None:
    """Checked before the handshake, so a refused client gets a plain HTTP 401/404/422/429 and no socket."""
    session_id = (request.view_args or {}).get("session_id")
    if session_id is None:
        return
    with state().db.transaction() as session:
        load_visible_session(session, session_id, Role.VIEWER)
    parse_since()
    token, via = presented_credential()
    g.socket_grant = Grant(user_id=current_user().id, session_id=session_id, via=via, token=token)
    g.socket_slot = state().sockets.acquire(current_user().id, state().settings)  # last: nothing after it can fail


@bp.teardown_request
def release_socket_slot(_error: BaseException | None) -> None:
    """Runs after every request of this blueprint, whichever way the socket ended."""
    slot = g.pop("socket_slot", None)
    if slot is not None:
        slot.release()


def presented_credential() -> tuple[str, Credential]:
    """The token the handshake authenticated with, chosen as web/auth.py's `authenticate` chooses it."""
    token = presented_token()
    if token is not None:
        return token, "bearer"
    return request.cookies[SESSION_COOKIE], "cookie"


def parse_since() -> int:
    raw = request.args.get("since", "0")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(SEQ_MAX)) or int(raw) > SEQ_MAX:
        raise HttpError(422, "validation_failed", "since must be a whole number (the last seq you received)",
                        [{"path": "since", "message": f"not an integer between 0 and {SEQ_MAX}"}])
    return int(raw)


@sock.route("/ws/sessions/<uuid:session_id>", bp=bp)
def session_events(ws: Any, session_id: uuid.UUID) -> None:
    try:
        EventStream(ws, g.socket_grant).run(parse_since())
    except ConnectionClosed:
        raise
    except Exception:
        # Without this the client would see the connection drop with no close code.
        logger.exception("session socket failed", extra={"session_id": str(session_id)})
        ws.close(SERVER_ERROR, "server error; reconnect with since=<the last seq you received>")


class LiveFeed:
    """The session's Redis channel, kept optional: Postgres holds every event, so while Redis is away
    the stream carries on by polling Postgres (every ws_poll_seconds) and subscribes again every
    RESUBSCRIBE_SECONDS; `gap` asks for a replay whenever the feed was (re)connected or lost."""

    def __init__(self, client: Any, channel: str) -> None:
        self.client, self.channel = client, channel
        self.pubsub: Any = None
        self.retry_at = 0.0
        self.gap = False

    def subscribe(self) -> None:
        try:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(self.channel)
        except RedisError:
            logger.warning("Redis unreachable: the session socket polls Postgres", extra={"channel": self.channel})
            self.retry_at = time.monotonic() + RESUBSCRIBE_SECONDS
            return
        self.pubsub = pubsub
        self.gap = True

    def next_message(self, timeout: float) -> dict[str, Any] | None:
        if self.pubsub is None:
            if time.monotonic() >= self.retry_at:
                self.subscribe()
            else:
                time.sleep(timeout)
            return None
        try:
            message = self.pubsub.get_message(timeout=timeout)
        except (RedisError, OSError):
            self.close()
            self.retry_at = time.monotonic() + RESUBSCRIBE_SECONDS
            self.gap = True
            return None
        if message is not None and message.get("type") == "message":
            return json.loads(message["data"])
        return None

    def close(self) -> None:
        if self.pubsub is not None:
            try:
                self.pubsub.close()
            except (RedisError, OSError):
                pass
            self.pubsub = None


class EventStream:
    def __init__(self, ws: Any, grant: Grant) -> None:
        self.ws = ws
        self.grant = grant
        self.session_id = grant.session_id
        self.state = state()

    def run(self, since: int) -> None:
        settings = self.state.settings
        feed = LiveFeed(self.state.redis, session_channel(settings.redis_prefix, self.session_id))
        feed.subscribe()  # before the replay, so nothing published meanwhile is missed
        try:
            last = self.replay(since)
            quiet_since = time.monotonic()
            next_check = quiet_since + settings.ws_access_check_seconds  # the handshake just checked
            while True:
                if time.monotonic() >= next_check:
                    if self.access_ended():
                        return
                    next_check = time.monotonic() + settings.ws_access_check_seconds
                message = feed.next_message(0.25)
                if message is not None:
                    quiet_since = time.monotonic()
                    last = self.forward(message, last)
                elif feed.gap or time.monotonic() - quiet_since >= settings.ws_poll_seconds:
                    feed.gap = False  # Redis came back (or went): what it carried meanwhile is in Postgres
                    quiet_since = time.monotonic()
                    last = self.replay(last)
                self.ws.receive(timeout=0)  # raises ConnectionClosed once the client has gone
        finally:
            feed.close()

    def access_ended(self) -> bool:
        """Re-check the token, the role and the session; on a denial close with its code."""
        verdict = check_access(self.state.db, self.grant)
        if not isinstance(verdict, Denied):
            return False
        logger.info("closing session socket: %s", verdict.reason,
                    extra={"session_id": str(self.session_id), "user_id": str(self.grant.user_id),
                           "close_code": int(verdict.code)})
        self.ws.close(int(verdict.code), verdict.reason)
        return True

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
