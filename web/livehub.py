"""One Redis subscription per web process, fanned out in memory to the session sockets it serves.

Each open session socket (web/websocket.py) owns a Mailbox; the hub's two threads serve them all:

    register(grant, send, writable)   before the socket's replay; when Redis is up it returns once
                                      the session's channel is subscribed, so nothing published
                                      later is missed
    feed thread (Redis):
        the first socket of a session subscribes its channel; the last one leaving unsubscribes it
        message on a channel -> offer it to every mailbox of that session:
            the socket thread is idle, the event is the next seq, small, and the client's socket
            can take it now          -> the feed thread sends it itself (no thread wakes up)
            otherwise                -> left pending, and the socket thread woken (Pending) to
                                        send it, filling any gap from Postgres first
            a client that stops reading: past MAILBOX_LIMIT pending events they are dropped and
                                        replayed from Postgres once it reads again (Gap)
        Redis lost -> retry every RESUBSCRIBE_SECONDS; once back, Gap into every mailbox of each
                      channel as it is subscribed again
    watch thread (Postgres):
        every ws_access_check_seconds: check_grants(every socket's grant), one transaction
            (web/access.py)           -> Closing(denied) where access ended;
                                         Failure where the check could not run (close 1011)
        every ws_poll_seconds: one query for the last_seq of every watched session; a socket
            that has sent less -> Behind(seq)   (a lost publish, or Redis down)
    unregister(mailbox)              when the socket ends, however it ends

Postgres stays the truth: whoever sends sends only `last + 1` (Mailbox), each socket drops what it
already sent and replays what it missed, so a mailbox item is only ever a reason to send or to
look. Redis carries each event once per process, whatever the number of sockets.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import redis
from redis.exceptions import RedisError
from sqlalchemy import select

from orchestrator.settings import Settings
from orchestrator.store.database import Database
from orchestrator.store.models import ChatSession
from orchestrator.tracing.publisher import session_channel
from web.access import Denied, Grant, check_grants

logger = logging.getLogger(__name__)
FEED_TICK_SECONDS = 0.05  # how long a new channel may wait for the feed thread to subscribe it
READY_TIMEOUT_SECONDS = 2.0  # past this a socket starts anyway: the poll fills in
RESUBSCRIBE_SECONDS = 2.0
MAILBOX_LIMIT = 5000  # queued items per socket before its Live events are dropped (and replayed later)
DIRECT_FRAME_LIMIT = 16 * 1024  # larger events go through the socket's thread, which may block on a slow client


@dataclass(frozen=True)
class Live:
    """An event as Redis carried it: its seq and the exact JSON text to send."""

    seq: int
    frame: str


@dataclass(frozen=True)
class Pending:
    """Live events wait in the mailbox that the hub could not send itself: send them."""


@dataclass(frozen=True)
class Gap:
    """Something may have been missed (Redis reconnected, or the mailbox overflowed): replay."""


@dataclass(frozen=True)
class Behind:
    """Postgres holds events up to `seq` for this session."""

    seq: int


@dataclass(frozen=True)
class Closing:
    """Access ended: close with this code and reason."""

    denied: Denied


@dataclass(frozen=True)
class Failure:
    """The access re-check could not run; the socket ends with 1011 and the client reconnects."""

    reason: str


Item = Pending | Gap | Behind | Closing | Failure  # what wakes a socket's thread
PENDING, GAP = Pending(), Gap()


class Mailbox:
    """One socket's side of the hub. Exactly one side sends at a time, and always `last + 1`:

        the feed thread, while the socket thread is idle: it sends each live event itself if it
            is the next seq, small, and the client's socket can take it without blocking
        the socket thread, from the moment the feed could not (a gap to fill from Postgres, a
            client not reading fast enough, a large event) or a control item woke it, until its
            pending events are sent: then the feed takes over again

    The lock is held only to hand over, never across a send that may block, so the feed thread
    never waits on a slow client. In the steady state no socket thread wakes for an event, which
    is what lets one process serve hundreds of sockets (docs/events.md).
    """

    def __init__(self, grant: Grant, send: Callable[[str], None], writable: Callable[[], bool]) -> None:
        self.grant, self.send, self.writable = grant, send, writable
        self.lock = threading.Lock()
        self.last = 0  # the seq last sent; the feed's while it may send, else the socket thread's
        self.busy = True  # the socket thread sends (it starts with its replay)
        self.pending: deque[Live] = deque()
        self.items: queue.SimpleQueue[Item] = queue.SimpleQueue()

    # ------------------------------------------------------------------ the hub's side

    def put(self, item: Item) -> None:
        self.items.put(item)

    def offer(self, event: Live) -> None:
        """A live event from the feed: sent now when it can be without blocking, else left pending."""
        with self.lock:
            if len(self.pending) >= MAILBOX_LIMIT:  # a client not reading: drop, and replay once it catches up
                self.pending.clear()
                self.items.put(GAP)
            self.pending.append(event)
            if self.busy or self.send_pending():
                return
            self.busy = True
        self.items.put(PENDING)

    def send_pending(self) -> bool:
        """Send what is pending from the feed thread; False where the socket thread has to."""
        while self.pending:
            event = self.pending[0]
            if event.seq > self.last:
                if event.seq != self.last + 1 or len(event.frame) > DIRECT_FRAME_LIMIT or not self.writable():
                    return False
                try:
                    self.send(event.frame)
                except Exception:  # the client went: its thread finds out when it tries
                    return False
                self.last = event.seq
            self.pending.popleft()
        return True

    # ------------------------------------------------------------------ the socket thread's side

    def next(self, timeout: float) -> Item | None:
        try:
            return self.items.get(timeout=timeout)
        except queue.Empty:
            return None

    def take_over(self) -> int:
        """The socket thread sends from now on; the seq last sent."""
        with self.lock:
            self.busy = True
            return self.last

    def take_pending(self, last: int) -> list[Live]:
        """The events left pending, in order; none left -> the feed sends again, from `last`."""
        with self.lock:
            self.last = last
            events = list(self.pending)
            self.pending.clear()
            if not events:
                self.busy = False
        return events


@dataclass(eq=False)
class Channel:
    session_id: uuid.UUID
    mailboxes: set[Mailbox] = field(default_factory=set)
    ready: threading.Event = field(default_factory=threading.Event)
    seen: int = 0  # the session's last_seq at the previous poll


class LiveHub:
    def __init__(self, settings: Settings, db: Database, client: redis.Redis) -> None:
        self.settings, self.db, self.client = settings, db, client
        self.lock = threading.Lock()
        self.channels: dict[str, Channel] = {}
        self.connected = True  # until a subscribe fails: sockets then start without waiting for one
        self.wake = threading.Event()
        self.started = False

    # ------------------------------------------------------------------ the sockets' side

    def register(self, grant: Grant, send: Callable[[str], None], writable: Callable[[], bool]) -> Mailbox:
        self.start()
        mailbox = Mailbox(grant, send, writable)
        name = session_channel(self.settings.redis_prefix, grant.session_id)
        with self.lock:
            channel = self.channels.get(name)
            if channel is None:
                channel = self.channels[name] = Channel(grant.session_id)
                self.wake.set()
            channel.mailboxes.add(mailbox)
        if self.connected:
            channel.ready.wait(READY_TIMEOUT_SECONDS)
        return mailbox

    def unregister(self, mailbox: Mailbox) -> None:
        name = session_channel(self.settings.redis_prefix, mailbox.grant.session_id)
        with self.lock:
            channel = self.channels.get(name)
            if channel is not None:
                channel.mailboxes.discard(mailbox)
                if not channel.mailboxes:
                    del self.channels[name]

    def start(self) -> None:
        with self.lock:
            if self.started:
                return
            self.started = True
        threading.Thread(target=self.run_feed, name="livehub-feed", daemon=True).start()
        threading.Thread(target=self.run_watch, name="livehub-watch", daemon=True).start()

    # ------------------------------------------------------------------ feed thread: Redis

    def run_feed(self) -> None:
        resumed = False  # after a lost connection every channel owes its sockets a Gap
        while True:
            pubsub = self.client.pubsub()
            try:
                self.follow(pubsub, resumed)
            except (RedisError, OSError):
                logger.warning("Redis unreachable: session sockets poll Postgres every %ss until it is back",
                               self.settings.ws_poll_seconds)
            except Exception:  # a bug must not end live delivery for the whole process
                logger.exception("the live event feed failed; starting it again")
            finally:
                self.lost()
                try:
                    pubsub.close()
                except (RedisError, OSError):
                    pass
            resumed = True
            time.sleep(RESUBSCRIBE_SECONDS)

    def follow(self, pubsub: Any, resumed: bool) -> None:
        """Keep the subscriptions equal to the channels with sockets and dispatch what arrives."""
        subscribed: set[str] = set()  # sent a subscribe for, in this connection
        confirmed: set[str] = set()  # and Redis confirmed it
        owed_gap = resumed
        while True:
            with self.lock:
                wanted = set(self.channels)
                for name in wanted & confirmed:
                    self.channels[name].ready.set()  # a socket that came back before the unsubscribe went out
            if wanted - subscribed:
                pubsub.subscribe(*(wanted - subscribed))
                subscribed |= wanted
            if subscribed - wanted:
                pubsub.unsubscribe(*(subscribed - wanted))
                confirmed -= subscribed - wanted
                subscribed &= wanted
            if not subscribed:
                self.wake.wait(1.0)  # nothing to read; a new socket wakes us
                self.wake.clear()
                continue
            message = pubsub.get_message(timeout=FEED_TICK_SECONDS)
            while message is not None:
                self.dispatch(message, confirmed, owed_gap)
                message = pubsub.get_message(timeout=0)

    def dispatch(self, message: dict[str, Any], confirmed: set[str], owed_gap: bool) -> None:
        kind, name = message["type"], message["channel"].decode()
        if kind == "subscribe":
            confirmed.add(name)
            self.connected = True
            with self.lock:
                channel = self.channels.get(name)
                mailboxes = tuple(channel.mailboxes) if channel else ()
            if channel is not None:
                channel.ready.set()
                if owed_gap:
                    for mailbox in mailboxes:
                        mailbox.put(GAP)
        elif kind == "message":
            try:
                seq = int(json.loads(message["data"])["seq"])
            except (ValueError, KeyError, TypeError):
                logger.warning("dropped a message without a seq on %s", name)
                return
            live = Live(seq, message["data"].decode())
            with self.lock:
                channel = self.channels.get(name)
                mailboxes = tuple(channel.mailboxes) if channel else ()
            for mailbox in mailboxes:
                mailbox.offer(live)

    def lost(self) -> None:
        """Redis went away: release sockets waiting for a subscription (they poll meanwhile)."""
        self.connected = False
        with self.lock:
            for channel in self.channels.values():
                channel.ready.set()
                channel.ready = threading.Event()

    # ------------------------------------------------------------------ watch thread: Postgres

    def run_watch(self) -> None:
        check_every, poll_every = self.settings.ws_access_check_seconds, self.settings.ws_poll_seconds
        next_check, next_poll = time.monotonic() + check_every, time.monotonic() + poll_every
        while True:
            time.sleep(max(0.0, min(next_check, next_poll) - time.monotonic()))
            now = time.monotonic()
            try:
                if now >= next_check:
                    next_check = now + check_every
                    self.check_access()
                if now >= next_poll:
                    next_poll = now + poll_every
                    self.poll()
            except Exception:  # a bug must not stop the re-checks of every socket in the process
                logger.exception("the session socket watch failed; carrying on")

    def watched(self) -> list[Channel]:
        with self.lock:
            return list(self.channels.values())

    def check_access(self) -> None:
        mailboxes = [mailbox for channel in self.watched() for mailbox in tuple(channel.mailboxes)]
        if not mailboxes:
            return
        try:
            verdicts = check_grants(self.db, (mailbox.grant for mailbox in mailboxes))
        except Exception:
            logger.exception("the access re-check of open session sockets failed; closing them with 1011")
            for mailbox in mailboxes:
                mailbox.put(Failure("the server could not re-check your access; reconnect with since=<last seq>"))
            return
        for mailbox in mailboxes:
            verdict = verdicts[mailbox.grant]
            if isinstance(verdict, Denied):
                mailbox.put(Closing(verdict))

    def poll(self) -> None:
        """One query for every watched session: wake the sockets that have not sent what Postgres
        holds. While Redis is up, only a seq already there at the previous poll counts as lost (one
        that committed a moment ago is most likely on its way, and each Behind costs a replay); so a
        lost publish shows within two polls, and at the next one while Redis is down."""
        channels = {channel.session_id: channel for channel in self.watched()}
        if not channels:
            return
        try:
            with self.db.transaction() as session:
                rows = session.execute(select(ChatSession.id, ChatSession.last_seq)
                                       .where(ChatSession.id.in_(list(channels)))).all()
        except Exception:
            logger.warning("could not poll Postgres for session sockets; trying again", exc_info=True)
            return
        for session_id, last_seq in rows:
            channel = channels[session_id]
            with self.lock:
                due = min(last_seq, channel.seen) if self.connected else last_seq
                channel.seen = last_seq
                mailboxes = tuple(channel.mailboxes)
            for mailbox in mailboxes:
                if mailbox.last < due:  # read without its lock: a stale value costs one replay at most
                    mailbox.put(Behind(due))
