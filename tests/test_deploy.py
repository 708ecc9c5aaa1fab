"""The team deployment files stay consistent with the code (no Docker engine is needed to check this)."""

from __future__ import annotations

import runpy

import yaml

from orchestrator.settings import FIELDS
from tests.support import REPO

SERVICES = {"postgres", "redis", "migrate", "web", "worker", "beat", "flower"}
NOT_OURS = {"POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH"}


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_has_every_service_and_they_use_our_image() -> None:
    services = compose()["services"]
    assert set(services) == SERVICES
    for name in ("migrate", "web", "worker", "flower"):
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert services[name]["env_file"] == "deploy/boocode.env"
    assert services["web"]["command"][-1] == "web.wsgi:app" and (REPO / "web" / "wsgi.py").exists()
    assert services["worker"]["command"][:3] == ["celery", "--app", "worker.celery_app"]
    assert services["beat"]["command"][:4] == ["celery", "--app", "worker.celery_app", "beat"]
    assert (REPO / "worker" / "celery_app.py").exists()
    assert services["migrate"]["command"] == ["boocode", "db", "upgrade"]
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_environment_template_names_only_real_settings() -> None:
    variables = {line.split("=", 1)[0] for line in (REPO / "deploy" / "boocode.env.example").read_text().splitlines()
                 if line and not line.startswith("#")}
    known = {variable for variable, _ in FIELDS.values()} | NOT_OURS
    assert variables - known == set()
    assert {"DATABASE_URL", "REDIS_URL"} <= variables


def test_gunicorn_config_uses_a_threaded_worker() -> None:
    config = runpy.run_path(str(REPO / "deploy" / "gunicorn.conf.py"))
    from gunicorn.workers.gthread import ThreadWorker

    from web.server import ThreadWorker as OurWorker

    assert config["worker_class"] == "web.server.ThreadWorker" and issubclass(OurWorker, ThreadWorker)
    assert config["threads"] >= 8
