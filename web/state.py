"""What a request handler may use: settings, the database, Redis, the enqueue helper, and this
process's count of open WebSockets (web/access.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
from flask import current_app

from orchestrator.settings import Settings
from orchestrator.store.database import Database
from web.access import SocketSlots
from web.queue import TaskQueue


@dataclass(frozen=True)
class WebState:
    settings: Settings
    db: Database
    redis: redis.Redis
    queue: TaskQueue
    sockets: SocketSlots = field(default_factory=SocketSlots)  # one per app, so one per process


def state() -> WebState:
    return current_app.extensions["boocode"]
