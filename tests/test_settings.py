"""Settings: every problem reported at once, naming the variable; file and environment layering."""

from pathlib import Path

import pytest

from orchestrator.errors import ConfigurationError
from orchestrator.settings import load_settings


def test_every_problem_is_reported_at_once_with_its_variable() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"DATABASE_URL": "mysql://nope", "BOOCODE_PORT": "http", "BOOCODE_LEASE_SECONDS": "-1",
                       "BOOCODE_LOG_FORMAT": "xml"})
    problems = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 4
    for variable in ("DATABASE_URL", "BOOCODE_PORT", "BOOCODE_LEASE_SECONDS", "BOOCODE_LOG_FORMAT"):
        assert variable in problems


def test_urls_are_normalised_for_the_drivers() -> None:
    settings = load_settings({"DATABASE_URL": "postgres://u@h:5432/d", "REDIS_URL": "redis://h:6379/2"})
    assert settings.database_url == "postgresql+psycopg://u@h:5432/d"
    assert settings.redis_url == "redis://h:6379/2"


def test_config_file_is_layered_under_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "boocode.toml"
    config.write_text('port = 9000\nlease_seconds = 7.5\nredis_prefix = "file"\n')
    settings = load_settings({"BOOCODE_CONFIG": str(config), "BOOCODE_REDIS_PREFIX": "env"})
    assert settings.port == 9000
    assert settings.lease_seconds == 7.5
    assert settings.redis_prefix == "env"


def test_config_file_problems_are_reported(tmp_path: Path) -> None:
    config = tmp_path / "boocode.toml"
    config.write_text('port = "many"\nunknown_key = 1\n')
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"BOOCODE_CONFIG": str(config)})
    problems = "\n".join(caught.value.problems)
    assert "unknown_key" in problems and "BOOCODE_PORT" in problems


def test_web_and_worker_refuse_to_start_without_services() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings({}).require_services()
    assert any("DATABASE_URL" in problem for problem in caught.value.problems)
    assert any("REDIS_URL" in problem for problem in caught.value.problems)


def test_settings_round_trip_through_the_environment() -> None:
    settings = load_settings({"DATABASE_URL": "postgresql://a@b/c", "BOOCODE_LEASE_SECONDS": "3"})
    assert load_settings(settings.to_environment()) == settings


def test_service_processes_get_parse_errors_and_missing_services_in_one_report() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"BOOCODE_PORT": "http"}, services_required=True)
    problems = "\n".join(caught.value.problems)
    assert "BOOCODE_PORT" in problems and "DATABASE_URL" in problems and "REDIS_URL" in problems
