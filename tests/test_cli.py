"""The `boocode` command as a user runs it: a real process against the live server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import EXIT_AUTH, EXIT_NOT_FOUND, EXIT_OK, EXIT_REJECTED, EXIT_UNREACHABLE, EXIT_USAGE
from tests.support import Api

BOOCODE = str(Path(sys.executable).parent / "boocode")


def revisions() -> list[str]:
    """Migration revisions, oldest first."""
    from alembic.script import ScriptDirectory

    from orchestrator.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("postgresql://unused"))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


@pytest.fixture
def cli(api: Api, tmp_path: Path):  # type: ignore[no-untyped-def]
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BOOCODE_URL": api.url,
                   "BOOCODE_TOKEN": api.token, "BOOCODE_DATA_DIR": str(tmp_path / "data")}

    def run(*arguments: str, expect: int = EXIT_OK, **overrides: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([BOOCODE, *arguments], capture_output=True, text=True, timeout=120,
                                env={**environment, **overrides})
        assert result.returncode == expect, (arguments, result.returncode, result.stdout, result.stderr)
        return result

    return run


def test_a_user_drives_projects_sessions_and_runs(cli, tmp_path: Path, worker) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "repo"
    root.mkdir()
    project = json.loads(cli("project", "add", str(root), "--json").stdout)
    assert project["root_path"] == str(root.resolve()) and project["name"] == "repo"
    listed = json.loads(cli("project", "list", "--json").stdout)
    assert project["id"] in {item["id"] for item in listed}
    assert "repo" in cli("project", "list").stdout

    chat = json.loads(cli("session", "create", "--project", project["id"], "--title", "cli", "--json").stdout)
    assert [item["id"] for item in json.loads(cli("session", "list", "--project", project["id"], "--json").stdout)] \
        == [chat["id"]]

    probe = json.loads(cli("run", "probe", chat["id"], "--steps", "2", "--step-seconds", "0", "--wait",
                           "--json").stdout)
    assert probe["status"] == "completed"
    shown = json.loads(cli("run", "show", probe["id"], "--json").stdout)
    assert [step["step_key"] for step in shown["steps"]] == ["probe/0", "probe/1"]
    runs = json.loads(cli("run", "list", "--session", chat["id"], "--json").stdout)
    assert [run["id"] for run in runs] == [probe["id"]]

    sent = json.loads(cli("session", "send", chat["id"], "hello agent", "--json").stdout)
    watched = cli("session", "watch", chat["id"], "--until-run", sent["run"]["id"]).stdout
    assert "user: hello agent" in watched and "run.finished" in watched
    transcript = json.loads(cli("session", "show", chat["id"], "--json").stdout)
    assert [message["parts"][0]["text"] for message in transcript["messages"]] == ["hello agent"]

    refused = cli("run", "cancel", probe["id"], expect=EXIT_REJECTED)
    assert refused.stdout == "" and "already finished" in refused.stderr


def test_exit_codes_scripts_can_rely_on(cli, api: Api) -> None:  # type: ignore[no-untyped-def]
    missing = cli("run", "show", "00000000-0000-0000-0000-000000000000", expect=EXIT_NOT_FOUND)
    assert missing.stdout == "" and "does not exist" in missing.stderr
    assert "unknown or revoked" in cli("project", "list", expect=EXIT_AUTH, BOOCODE_TOKEN="bct_nope").stderr
    cli("project", "list", expect=EXIT_UNREACHABLE, BOOCODE_URL="http://127.0.0.1:9")
    cli("run", "list", expect=EXIT_USAGE)
    cli("no-such-command", expect=EXIT_USAGE)
    assert "BOOCODE_PORT" in cli("project", "list", expect=EXIT_USAGE, BOOCODE_PORT="eighty").stderr


def test_local_admin_commands(cli, settings) -> None:  # type: ignore[no-untyped-def]
    local = {"DATABASE_URL": settings.database_url}
    assert cli("db", "current", **local).stdout.strip() == revisions()[-1]
    created = json.loads(cli("admin", "create-user", "cli-made-user", "--json", **local).stdout)
    assert created["user"]["username"] == "cli-made-user" and created["token"].startswith("bct_")
    me = json.loads(cli("token", "list", "--json", BOOCODE_TOKEN=created["token"]).stdout)
    assert len(me) == 1
    duplicate = cli("admin", "create-user", "cli-made-user", expect=EXIT_REJECTED, **local)
    assert "already exists" in duplicate.stderr and "Traceback" not in duplicate.stderr
    bad_name = cli("admin", "create-user", "Bad Name", expect=EXIT_REJECTED, **local)
    assert "username must be" in bad_name.stderr


def test_db_commands_migrate_an_empty_database(cli, admin_postgres_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import create_database, drop_database

    name = f"boocode_cli_{tmp_path.name[-8:].lower().replace('-', '_')}"
    url = create_database(admin_postgres_url, name)
    try:
        assert cli("db", "current", DATABASE_URL=url).stdout.strip() == "(empty)"
        head, before_head = revisions()[-1], revisions()[-2]
        assert f"revision {head}" in cli("db", "upgrade", DATABASE_URL=url).stdout
        assert f"revision {before_head}" in cli("db", "downgrade", DATABASE_URL=url).stdout
        assert "revision (empty)" in cli("db", "downgrade", "base", DATABASE_URL=url).stdout
        assert f"revision {head}" in cli("db", "upgrade", DATABASE_URL=url).stdout
    finally:
        drop_database(admin_postgres_url, name)


def test_db_upgrade_without_database_url_uses_the_embedded_postgres(cli) -> None:  # type: ignore[no-untyped-def]
    data_dir = f"/tmp/bcdb-{os.getpid()}"  # short: the embedded server's socket lives here
    try:
        assert f"revision {revisions()[-1]}" in cli("db", "upgrade", BOOCODE_DATA_DIR=data_dir).stdout
        assert cli("db", "current", BOOCODE_DATA_DIR=data_dir).stdout.strip() == revisions()[-1]
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def test_transcripts_render_tool_calls_results_and_diffs() -> None:
    from orchestrator.cli.output import describe_event, render_parts

    rendered = render_parts("tool", [
        {"type": "tool_result", "name": "edit_file", "content": "edited a.py (1 replacement)", "is_error": False},
        {"type": "diff", "path": "a.py", "diff": "--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n"}])
    assert "edit_file result:" in rendered and "  -x = 1" in rendered and "  +x = 2" in rendered
    call = render_parts("assistant", [{"type": "text", "text": "Fixing."},
                                      {"type": "tool_call", "id": "c1", "name": "read_file",
                                       "arguments": '{"path": "a"}'}])
    assert call == 'assistant: Fixing.\nassistant calls read_file({"path": "a"})'
    interrupted = render_parts("tool", [{"type": "tool_result", "name": "run_command", "content": "interrupted: …",
                                         "is_error": True, "interrupted": True}])
    assert "run_command result (interrupted):" in interrupted
    approval = describe_event({"seq": 9, "type": "approval.requested", "run_id": "r" * 36,
                               "data": {"id": "a1", "tool": "run_command", "arguments": {"argv": ["ls"]}}})
    assert 'approval needed: run_command {"argv": ["ls"]}' in approval and "boocode approval approve a1" in approval
