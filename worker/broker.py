"""The Redis transport, with one fault of kombu's worked around (docs/worker.md, "Redis outages").

kombu 5.7's Redis channel, once its connection has dropped, still builds new clients from it: to
put the messages this worker received but did not acknowledge back on the queue as it closes, and
to acknowledge a task that finishes meanwhile. The connection object is gone by then, so building
the client raises `AttributeError: 'NoneType' object has no attribute 'hostname'`, which Celery
does not count as a connection error: it stops the whole worker as an "unrecoverable error" (seen
on every Redis restart under load).

Here a closed channel raises redis' ConnectionError instead, which Celery handles like any other
lost connection (it reconnects), and a restore that fails is logged and dropped. Those messages
need no rescue: they stay in Redis' unacked set (redelivered after the visibility timeout, and a
duplicate is harmless under the lease), and the recovery sweep re-enqueues any run nobody claimed
within a lease anyway (orchestrator/recovery.py).

The worker reaches this transport through its broker URL: `redis://…` becomes `boocode-redis://…`
and `redis+socket://…` `boocode-redis+socket://…`, an alias registered in kombu's transport table
(a URL's own scheme wins over Celery's `broker_transport` setting for `+socket` URLs, so the alias
is the one way that covers both). `rediss://` URLs keep kombu's stock transport.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

logger = logging.getLogger(__name__)


class RestoreTolerantQoS(kombu_redis.QoS):
    def restore_unacked(self, client: Any = None) -> None:
        try:
            super().restore_unacked(client)
        except Exception as error:  # AttributeError (the kombu fault) or the connection error itself
            logger.warning("could not hand unacknowledged messages back to Redis (%s); the recovery sweep "
                           "re-enqueues their runs", type(error).__name__)
            self._delivered.clear()


class Channel(kombu_redis.Channel):
    QoS = RestoreTolerantQoS

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if getattr(self.connection, "client", None) is None:
            raise redis.exceptions.ConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel


ALIAS = "boocode-redis"
TRANSPORT_ALIASES.setdefault(ALIAS, f"{__name__}:Transport")


def worker_broker_url(url: str) -> str:
    """The broker URL with this transport chosen (see the module docstring)."""
    for stock in ("redis+socket://", "redis://"):
        if url.startswith(stock):
            return ALIAS + url[len("redis"):]
    return url
