"""The Flask application factory."""

from __future__ import annotations

from flask import Flask

from orchestrator import services
from orchestrator.settings import Settings, load_settings
from web.auth import WS_PROTOCOL, init_auth
from web.blueprints import (
    approvals,
    browser,
    flow_schedules,
    flows,
    health,
    projects,
    runs,
    sessions,
    subagents,
    traces,
    users,
    workflows,
)
from web.errors import register_error_handlers
from web.headers import init_headers
from web.proxies import trust_proxies
from web.queue import TaskQueue
from web.state import WebState
from web.websocket import bp as websocket_bp


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    settings.require_services()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.config["SOCK_SERVER_OPTIONS"] = {"subprotocols": [WS_PROTOCOL], "ping_interval": 25}
    app.json.sort_keys = False  # type: ignore[attr-defined]  # Flask types app.json as the base JSONProvider
    redis_client = services.make_redis(settings)
    app.extensions["boocode"] = WebState(settings=settings, db=services.make_database(settings, redis_client),
                                         redis=redis_client, queue=TaskQueue(settings))
    register_error_handlers(app)
    init_headers(app)
    init_auth(app)
    for blueprint in (health.bp, users.bp, projects.bp, sessions.bp, runs.bp, traces.bp, approvals.bp, workflows.bp,
                      flows.bp, flow_schedules.bp, subagents.bp, browser.bp, websocket_bp):
        app.register_blueprint(blueprint)
    trust_proxies(app, settings.trusted_proxies)
    return app
