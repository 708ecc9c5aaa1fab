"""What a request handler may use: settings, the database, Redis and the enqueue helper."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app

from orchestrator.settings import Settings
from orchestrator.store.database import Database
from web.queue import TaskQueue


@dataclass(frozen=True)
class WebState:
    settings: Settings
    db: Database
    redis: redis.Redis
    queue: TaskQueue


def state() -> WebState:
    return current_app.extensions["boocode"]
