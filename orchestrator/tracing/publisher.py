"""Redis pub/sub transport for committed events.

One channel per session, `<prefix>:session:<id>:events`. Messages are JSON and carry their `seq`, so
a subscriber can drop duplicates and notice gaps (and fill them from Postgres).
"""

from __future__ import annotations

import json
from typing import Any

import redis


def session_channel(prefix: str, session_id: object) -> str:
    return f"{prefix}:session:{session_id}:events"


def encode_event(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), default=str)


class RedisPublisher:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def publish(self, event: dict[str, Any]) -> None:
        self.client.publish(session_channel(self.prefix, event["session_id"]), encode_event(event))

    def publish_many(self, events: list[dict[str, Any]]) -> None:
        """A transaction's events in one round trip, in order."""
        pipeline = self.client.pipeline(transaction=False)
        for event in events:
            pipeline.publish(session_channel(self.prefix, event["session_id"]), encode_event(event))
        pipeline.execute()
