"""`/ws/sessions/<id>?since=<seq>`: replay from Postgres, then live events from Redis, by `seq`,
for as long as the caller keeps access.

    before the handshake (plain HTTP errors, no socket):
        authenticated (web/auth.py) and a viewer of the session's project, else 401/404
        since is a whole number, else 422
        a slot under the per-user and per-process caps (web/access.py), else 429
    register a mailbox with the process' hub (web/livehub.py)   (first: it returns once the session's
                                                                 channel is subscribed, so nothing
                                                                 published later is missed)
    send every event with seq > since from Postgres       (the replay)
    loop, taking the mailbox's items in order:
        Live e:      e.seq <= last sent      -> drop (already sent during replay: the hand-over duplicate)
                     e.seq >  last sent + 1  -> send the gap from Postgres first (a lost pub/sub message)
                     send it
        Behind n:    n > last sent           -> replay (a lost last message, or Redis down: the hub
                                                polls Postgres every ws_poll_seconds for every socket)
        Gap:         replay                  (Redis came back, or this mailbox overflowed)
        Closing d:   close with 4401 / 4403 / 4404 and stop   (the hub re-checks access every
                                                               ws_access_check_seconds)
        Failure:     close with 1011 (the re-check could not run)
        nothing for CLIENT_CHECK_SECONDS: look whether the client has gone
    the request ends however it ends (client gone, close, error) -> unregister, the slot is released

Commit order equals seq order (see orchestrator/store/events.py), so Postgres always holds every
seq below one that was published; the client receives each event exactly once, in order. The
socket's thread waits on its mailbox only; Redis and the periodic Postgres work are shared by
every socket of the process.
"""

from __future__ import annotations

import logging
import select
import threading
import uuid
from typing import Any, Callable

from flask import Blueprint, current_app, g, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from orchestrator.domain.enums import Role
from orchestrator.store import events
from orchestrator.tracing.publisher import encode_event
from web.access import Credential, Grant
from web.auth import SESSION_COOKIE, current_user, load_visible_session, presented_token
from web.errors import HttpError
from web.livehub import Behind, Closing, Failure, Gap, Item, Live, LiveHub, Mailbox, Pending
from web.state import state

logger = logging.getLogger(__name__)
bp = Blueprint("websocket", __name__)
sock = Sock()
REPLAY_PAGE = 500
CLIENT_CHECK_SECONDS = 1.0  # how soon a quiet socket notices its client has gone (and frees its slot)
HUB_KEY = "boocode.livehub"
HUB_LOCK = threading.Lock()
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


class EventStream:
    def __init__(self, ws: Any, grant: Grant) -> None:
        self.ws = ws
        self.grant = grant
        self.session_id = grant.session_id
        self.state = state()

    def run(self, since: int) -> None:
        hub = live_hub()
        # before the replay, so nothing published meanwhile is missed
        mailbox = hub.register(self.grant, self.ws.send, writable_check(self.ws))
        try:
            last: int | None = self.replay(since)
            while last is not None:
                last = self.send_pending(mailbox, last)  # then the hub sends live events itself
                item = mailbox.next(CLIENT_CHECK_SECONDS)
                while item is None:  # idle
                    while self.ws.receive(timeout=0) is not None:  # raises ConnectionClosed once the client has gone
                        pass  # clients have nothing to say on this socket
                    item = mailbox.next(CLIENT_CHECK_SECONDS)
                last = self.handle(item, mailbox.take_over())
        finally:
            hub.unregister(mailbox)

    def send_pending(self, mailbox: Mailbox, last: int) -> int:
        """Send what the hub left pending until nothing is: from then on the hub sends."""
        while events := mailbox.take_pending(last):
            for event in events:
                last = self.forward(event, last)
        return last

    def handle(self, item: Item, last: int) -> int | None:
        """The last seq sent after acting on `item`, or None once the socket is closed."""
        match item:
            case Pending():
                return last  # sent by send_pending next
            case Behind(seq=seq):
                return self.replay(last) if seq > last else last
            case Gap():
                return self.replay(last)
            case Closing(denied=denied):
                logger.info("closing session socket: %s", denied.reason,
                            extra={"session_id": str(self.session_id), "user_id": str(self.grant.user_id),
                                   "close_code": int(denied.code)})
                self.ws.close(int(denied.code), denied.reason)
                return None
            case Failure(reason=reason):
                self.ws.close(SERVER_ERROR, reason)
                return None
        raise AssertionError(f"unknown mailbox item {item!r}")

    def forward(self, event: Live, last: int) -> int:
        seq = event.seq
        if seq <= last:
            return last  # already sent (by a replay, or directly by the hub): the hand-over duplicate
        if seq > last + 1:
            last = self.replay(last, until=seq - 1)  # a lost pub/sub message
        if seq == last + 1:
            self.ws.send(event.frame)
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


def writable_check(ws: Any) -> Callable[[], bool]:
    """Can the client's socket take a small frame now without blocking? The hub sends live events
    from its own thread only then, so a client that stops reading can never hold it up. Without a
    socket to look at (another WebSocket server), the hub leaves every send to the socket's thread."""
    sock = getattr(ws, "sock", None)  # simple-websocket's connection socket
    if sock is None:
        return lambda: False
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    return lambda: any(mask & select.POLLOUT and not mask & (select.POLLERR | select.POLLHUP | select.POLLNVAL)
                       for _, mask in poller.poll(0))


def live_hub() -> LiveHub:
    """This app's hub (one per app, so one per web process), made on the first socket."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with HUB_LOCK:
        hub = app.extensions.get(HUB_KEY)
        if hub is None:
            web = state()
            hub = app.extensions[HUB_KEY] = LiveHub(web.settings, web.db, web.redis)
    return hub
