"""Who may keep a session WebSocket open, and how many sockets one user and one process may hold.

Both halves serve web/websocket.py:

    admission, before the handshake (so a refused client gets plain HTTP and no socket)
        slots.acquire(user)         -> a Slot, or HttpError 429 naming the setting to raise
            per user:     BOOCODE_WS_MAX_PER_USER      (default 8)
            per process:  BOOCODE_WS_MAX_PER_PROCESS   (default BOOCODE_WEB_THREADS - WS_THREAD_RESERVE)
        slot.release()              when the request ends, however it ends (idempotent)

    re-check, every BOOCODE_WS_ACCESS_CHECK_SECONDS while the socket is open
        check_access(db, grant)     -> Allowed | Denied(close code, reason)
            the token no longer authenticates (revoked, expired, signed out)   -> 4401
            the user has no role in the session's project any more             -> 4403
            the session (or its project) is gone                               -> 4404

Why a process cap: gunicorn's gthread worker lends one thread to each open socket for its whole
life, so sockets that took every thread would leave REST and `/health` queued forever. The default
cap keeps WS_THREAD_RESERVE threads for everything else. Counts live in this process behind one
lock, so concurrent handshakes cannot overshoot; a process that dies takes its counts with it.

The re-check goes through the same functions the handshake used (`users.authenticate_token`,
`projects.role_of`), so whatever makes a token or a role invalid there closes open sockets too.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

from orchestrator.domain.enums import Role
from orchestrator.errors import NotFoundError
from orchestrator.settings import Settings
from orchestrator.store import projects, users
from orchestrator.store import sessions as chat_sessions
from orchestrator.store.database import Database
from web.errors import HttpError

WS_THREAD_RESERVE = 4  # web threads never lent to sockets by default: REST and /health run on these

Credential = Literal["bearer", "cookie"]


class CloseCode(IntEnum):
    """Application close codes (4000-4999) a session socket ends with; listed in docs/events.md."""

    CREDENTIAL_ENDED = 4401
    ACCESS_REMOVED = 4403
    SESSION_GONE = 4404


@dataclass(frozen=True)
class Grant:
    """What a socket was opened with, re-checked against Postgres while it stays open."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    via: Credential
    token: str = field(repr=False)


@dataclass(frozen=True)
class Allowed:
    pass


@dataclass(frozen=True)
class Denied:
    code: CloseCode
    reason: str  # sent in the close frame, so at most 123 bytes


TOKEN_ENDED = Denied(CloseCode.CREDENTIAL_ENDED, "the API token was revoked or has expired; "
                                                 "reconnect with a valid token")
SIGNED_OUT = Denied(CloseCode.CREDENTIAL_ENDED, "the browser session ended (signed out or expired); sign in again")
ACCESS_REMOVED = Denied(CloseCode.ACCESS_REMOVED, "you no longer have access to this session's project")
SESSION_GONE = Denied(CloseCode.SESSION_GONE, "this session no longer exists")


def check_access(db: Database, grant: Grant) -> Allowed | Denied:
    """May the socket described by `grant` keep streaming? One short transaction of key lookups."""
    with db.transaction() as session:
        user = users.authenticate_token(session, grant.token)
        if user is None or user.id != grant.user_id:
            return SIGNED_OUT if grant.via == "cookie" else TOKEN_ENDED
        try:
            chat = chat_sessions.load_session(session, grant.session_id)
        except NotFoundError:
            return SESSION_GONE
        role = projects.role_of(session, user, chat.project_id)
        if role is None or not role.allows(Role.VIEWER):
            return ACCESS_REMOVED
    return Allowed()


def process_socket_limit(settings: Settings) -> int:
    if settings.ws_max_per_process is not None:
        return settings.ws_max_per_process
    return max(0, settings.web_threads - WS_THREAD_RESERVE)


class Slot:
    """One admitted socket's place in the counts; `release()` may be called any number of times."""

    def __init__(self, slots: "SocketSlots", user_id: uuid.UUID) -> None:
        self.slots, self.user_id, self.released = slots, user_id, False

    def release(self) -> None:
        self.slots.release(self)


class SocketSlots:
    """Open session sockets in this process, in total and per user."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._per_user: dict[uuid.UUID, int] = {}
        self._total = 0

    @property
    def open(self) -> int:
        return self._total

    def acquire(self, user_id: uuid.UUID, settings: Settings) -> Slot:
        per_user, per_process = settings.ws_max_per_user, process_socket_limit(settings)
        with self._lock:
            held = self._per_user.get(user_id, 0)
            if held >= per_user:
                raise HttpError(429, "too_many_sockets",
                                f"you already hold {held} WebSockets on this server process, the most one user may "
                                f"(BOOCODE_WS_MAX_PER_USER={per_user}); close one and try again",
                                {"limit": per_user, "setting": "BOOCODE_WS_MAX_PER_USER"})
            if self._total >= per_process:
                raise HttpError(429, "too_many_sockets",
                                f"this server process already holds {self._total} WebSockets, its limit "
                                f"(BOOCODE_WS_MAX_PER_PROCESS={per_process}; by default BOOCODE_WEB_THREADS minus "
                                f"{WS_THREAD_RESERVE}, so other requests always find a thread); try again shortly, "
                                f"or ask the operator to raise BOOCODE_WEB_THREADS",
                                {"limit": per_process, "setting": "BOOCODE_WS_MAX_PER_PROCESS"})
            self._per_user[user_id] = held + 1
            self._total += 1
        return Slot(self, user_id)

    def release(self, slot: Slot) -> None:
        with self._lock:
            if slot.released:
                return
            slot.released = True
            self._total -= 1
            left = self._per_user[slot.user_id] - 1
            if left:
                self._per_user[slot.user_id] = left
            else:
                del self._per_user[slot.user_id]
