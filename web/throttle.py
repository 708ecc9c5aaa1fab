"""Sign-in throttling, counted in Redis so every web process shares the same counts.

    before a password is checked:
        failures of (user name, address) >= login_failures_per_user     -> 429, Retry-After
        failures of address              >= login_failures_per_address  -> 429, Retry-After
    a wrong password or unknown user: both counters + 1 (a window opens with its first failure and
        lasts login_window_seconds)
    a sign-in that succeeds: the (user name, address) counter is cleared

A throttled attempt is refused even with the right password, so guessing cannot go on during the
wait. The address is the client's as the trusted proxies report it (`web/proxies.py`). User names
and addresses are hashed into the keys, so any input makes a short, well-formed key.
"""

from __future__ import annotations

import hashlib
import math

import redis

from orchestrator.settings import Settings
from web.errors import HttpError


class LoginThrottle:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.prefix = f"{settings.redis_prefix}:login-failures"
        self.per_user = settings.login_failures_per_user
        self.per_address = settings.login_failures_per_address
        self.window_ms = max(1, int(settings.login_window_seconds * 1000))

    def check(self, username: str, address: str) -> None:
        """Raise 429 when either counter is at its limit."""
        user_key, address_key = self._keys(username, address)
        pipe = self.redis.pipeline()
        pipe.get(user_key)
        pipe.pttl(user_key)
        pipe.get(address_key)
        pipe.pttl(address_key)
        user_count, user_ttl, address_count, address_ttl = pipe.execute()
        waits = [ttl for count, ttl, limit in ((user_count, user_ttl, self.per_user),
                                                (address_count, address_ttl, self.per_address))
                 if count is not None and int(count) >= limit]
        if waits:
            retry_after = max(1, math.ceil(max(waits) / 1000))
            raise HttpError(429, "too_many_requests", f"too many failed sign-ins; try again in {retry_after} s",
                            {"retry_after_seconds": retry_after}, headers={"Retry-After": str(retry_after)})

    def record_failure(self, username: str, address: str) -> None:
        pipe = self.redis.pipeline()
        for key in self._keys(username, address):
            pipe.set(key, 0, px=self.window_ms, nx=True)
            pipe.incr(key)
        pipe.execute()

    def record_success(self, username: str, address: str) -> None:
        self.redis.delete(self._keys(username, address)[0])

    def _keys(self, username: str, address: str) -> tuple[str, str]:
        user = hashlib.sha256(f"{username}\n{address}".encode()).hexdigest()[:32]
        where = hashlib.sha256(address.encode()).hexdigest()[:32]
        return f"{self.prefix}:user:{user}", f"{self.prefix}:address:{where}"
