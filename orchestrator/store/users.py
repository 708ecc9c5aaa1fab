"""Users and API tokens. Tokens are random, shown once, and stored only as their SHA-256.

A token may end on the server: at `expires_at`, or once it has gone `idle_seconds` unused (browser
sessions get both at sign-in). An ended token authenticates no one, exactly like a revoked one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.errors import ConflictError, NotFoundError, ValidationError
from orchestrator.store.models import ApiToken, User

TOKEN_PREFIX = "bct_"
USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def serialize_user(user: User) -> dict[str, Any]:
    return {"id": str(user.id), "username": user.username, "display_name": user.display_name,
            "is_admin": user.is_admin, "created_at": user.created_at.isoformat()}


def serialize_token(token: ApiToken) -> dict[str, Any]:
    return {"id": str(token.id), "name": token.name, "prefix": token.prefix, "user_id": str(token.user_id),
            "created_at": token.created_at.isoformat(),
            "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
            "revoked": token.revoked_at is not None}


def create_user(session: Session, username: str, *, display_name: str | None = None,
                is_admin: bool = False) -> User:
    if not USERNAME_PATTERN.match(username):
        raise ValidationError("username must be 1-64 characters of lower-case letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit", details={"field": "username"})
    user = User(username=username, display_name=display_name, is_admin=is_admin,
                created_at=datetime.now(timezone.utc))
    session.add(user)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise ConflictError(f"a user named {username!r} already exists", details={"field": "username"}) from None
    return user


def load_user(session: Session, user_id: uuid.UUID) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError(f"user {user_id} does not exist")
    return user


def find_user_by_name(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.created_at, User.username)))


def create_token(session: Session, user_id: uuid.UUID, name: str, *, lifetime_seconds: float | None = None,
                 idle_seconds: float | None = None) -> tuple[ApiToken, str]:
    """Return the stored token row and the plain token, which is never stored."""
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(timezone.utc)
    token = ApiToken(user_id=user_id, name=name, token_hash=hash_token(plain), prefix=plain[:12], created_at=now,
                     expires_at=now + timedelta(seconds=lifetime_seconds) if lifetime_seconds is not None else None,
                     idle_seconds=max(1, round(idle_seconds)) if idle_seconds is not None else None)
    session.add(token)
    session.flush()
    return token, plain


def authenticate_token(session: Session, plain: str) -> User | None:
    """The user behind a live token, or None. Marks the token used: at most once a minute, and often
    enough for an idle limit to count from the last use within a quarter of that limit."""
    if not plain.startswith(TOKEN_PREFIX) or len(plain) > 200:
        return None
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(plain),
                                                  ApiToken.revoked_at.is_(None)))
    if token is None:
        return None
    now = datetime.now(timezone.utc)
    if token_ended(token, now):
        return None
    touch_every = min(60.0, token.idle_seconds / 4) if token.idle_seconds else 60.0
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > touch_every:
        session.execute(update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now))
    return session.get(User, token.user_id)


def token_ended(token: ApiToken, now: datetime) -> bool:
    """Past its absolute end, or unused for longer than its idle limit."""
    if token.expires_at is not None and now >= token.expires_at:
        return True
    last_use = token.last_used_at or token.created_at
    return token.idle_seconds is not None and (now - last_use).total_seconds() > token.idle_seconds


def list_tokens(session: Session, user_id: uuid.UUID) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user_id)
                                .order_by(ApiToken.created_at)))


def revoke_token(session: Session, user_id: uuid.UUID, token_id: uuid.UUID) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != user_id:
        raise NotFoundError(f"token {token_id} does not exist")
    if token.revoked_at is None:
        token.revoked_at = datetime.now(timezone.utc)
    return token


# Passwords (for signing in from a browser): scrypt from the standard library, a random salt per user.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
BROWSER_TOKEN_NAME = "browser session"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)


def set_password(session: Session, user_id: uuid.UUID, password: str) -> None:
    if len(password) < 8:
        raise ValidationError("a password has at least 8 characters")
    user = load_user(session, user_id)
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    user.password_hash = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(session: Session, username: str, password: str) -> User | None:
    """The user, if the password is theirs. Unknown users cost the same time as wrong passwords."""
    user = session.scalar(select(User).where(User.username == username))
    stored = user.password_hash if user is not None else None
    if not stored:
        _scrypt(password, b"\0" * 16, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        return None
    _, n, r, p, salt, digest = stored.split("$")
    candidate = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
    return user if secrets.compare_digest(candidate.hex(), digest) else None


def revoke_plain_token(session: Session, plain: str) -> None:
    session.execute(update(ApiToken).where(ApiToken.token_hash == hash_token(plain), ApiToken.revoked_at.is_(None))
                    .values(revoked_at=datetime.now(timezone.utc)))
