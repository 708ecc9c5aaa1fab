"""WSGI entry point for gunicorn: `gunicorn -k gthread web.wsgi:app`."""

from orchestrator.logs import configure_logging
from orchestrator.settings import load_settings
from web.app import create_app

_settings = load_settings()
configure_logging(_settings)
app = create_app(_settings)
