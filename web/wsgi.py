"""WSGI entry point for gunicorn: `gunicorn --worker-class web.server.ThreadWorker web.wsgi:app`
(gunicorn's threaded worker, with its own refusals answered in our error shape: web/server.py)."""

import sys

from orchestrator.errors import ConfigurationError
from orchestrator.logs import configure_logging
from orchestrator.settings import load_settings
from web.app import create_app

try:
    _settings = load_settings(services_required=True)
except ConfigurationError as error:
    print(error, file=sys.stderr)
    raise SystemExit(2) from None
configure_logging(_settings)
app = create_app(_settings)
