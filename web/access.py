"""Who may keep a session WebSocket open, and how many sockets one user and one process may hold.

Both halves serve web/websocket.py:

    admission, before the handshake (so a refused client gets plain HTTP and no socket)
        slots.acquire(user)         -> a Slot, or HttpError 429 naming the setting to raise
            per user:     BOOCODE_WS_MAX_PER_USER      (default 8)
            per process:  BOOCODE_WS_MAX_PER_PROCESS   (default BOOCODE_WEB_THREADS - WS_THREAD_RESERVE)
        slot.release()              when the request ends, however it ends (idempotent)

    re-check, every BOOCODE_WS_ACCESS_CHECK_SECONDS while the socket is open (web/livehub.py's watch
    thread, for every socket of the process at once)
        check_grants(db, grants)    -> {grant: Allowed | Denied(close code, reason)}, one transaction
            the token no longer authenticates (revoked, expired, signed out)   -> 4401
            the user has no role in the session's project any more             -> 4403
            the session (or its project) is gone                               -> 4404

Why a process cap: gunicorn's gthread worker lends one thread to each open socket for its whole
life, so sockets that took every thread would leave REST and `/health` queued forever. The default
cap keeps WS_THREAD_RESERVE threads for everything else. Counts live in this process behind one
lock, so concurrent handshakes cannot overshoot; a process that dies takes its counts with it.
A socket's thread only waits on its in-memory mailbox (web/livehub.py), so a large thread count
is cheap; docs/events.md gives the measured cost per socket.

The re-check applies the rules the handshake used (`users.authenticate_token`, `projects.role_of`:
a revoked, expired or idle token, a removed member, a deleted session or project), but for every
socket of the process at once: `authenticate_tokens` and `check_grants` are their set-based forms,
three statements a round whatever the number of sockets. They use users.py's own `hash_token` and
`token_ended`, so a change to when a token ends reaches open sockets too.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import IntEnum
from typing import Iterable, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orchestrator.domain.enums import Role
from orchestrator.settings import Settings
from orchestrator.store import users
from orchestrator.store.database import Database
from orchestrator.store.models import ApiToken, ChatSession, Project, ProjectMember, User
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


def check_grants(db: Database, grants: Iterable[Grant]) -> dict[Grant, Allowed | Denied]:
    """May the sockets described by `grants` keep streaming? One transaction of three set-based
    lookups (tokens, sessions, memberships) however many sockets, users and sessions there are:
    500 sockets of 63 users cost about 10 ms of CPU a round, where looking each one up cost 270 ms."""
    grants = set(grants)
    with db.transaction() as session:
        people = authenticate_tokens(session, {grant.token for grant in grants})
        projects_of = {session_id: project_id for session_id, project_id in session.execute(
            select(ChatSession.id, ChatSession.project_id).join(Project, Project.id == ChatSession.project_id)
            .where(ChatSession.id.in_({grant.session_id for grant in grants})))}
        user_ids = {user.id for user in people.values() if user is not None}
        members = {(project_id, user_id): Role(role) for project_id, user_id, role in session.execute(
            select(ProjectMember.project_id, ProjectMember.user_id, ProjectMember.role)
            .where(ProjectMember.project_id.in_(set(projects_of.values())), ProjectMember.user_id.in_(user_ids)))}
    return {grant: judge(grant, people.get(grant.token), projects_of.get(grant.session_id), members)
            for grant in grants}


def judge(grant: Grant, user: User | None, project_id: uuid.UUID | None,
          members: dict[tuple[uuid.UUID, uuid.UUID], Role]) -> Allowed | Denied:
    """The verdict from what was looked up; the same rules as `projects.role_of` (admins own every project)."""
    if user is None or user.id != grant.user_id:
        return SIGNED_OUT if grant.via == "cookie" else TOKEN_ENDED
    if project_id is None:
        return SESSION_GONE
    role = Role.OWNER if user.is_admin else members.get((project_id, user.id))
    if role is None or not role.allows(Role.VIEWER):
        return ACCESS_REMOVED
    return Allowed()


def authenticate_tokens(session: Session, plains: set[str]) -> dict[str, User | None]:
    """`users.authenticate_token` for many tokens in two statements: the user behind each live token
    (None for an unknown, revoked or ended one), marking tokens used as often as it does."""
    hashes = {users.hash_token(plain): plain for plain in plains
              if plain.startswith(users.TOKEN_PREFIX) and len(plain) <= 200}
    found: dict[str, User | None] = dict.fromkeys(plains)
    now = datetime.now(timezone.utc)
    due: list[uuid.UUID] = []
    for token, user in session.execute(select(ApiToken, User).join(User, User.id == ApiToken.user_id)
                                       .where(ApiToken.token_hash.in_(hashes), ApiToken.revoked_at.is_(None))):
        if users.token_ended(token, now):
            continue
        found[hashes[token.token_hash]] = user
        touch_every = min(60.0, token.idle_seconds / 4) if token.idle_seconds else 60.0
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > touch_every:
            due.append(token.id)
    if due:
        session.execute(update(ApiToken).where(ApiToken.id.in_(due)).values(last_used_at=now))
    return found


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
