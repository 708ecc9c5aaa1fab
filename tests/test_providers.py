"""Per-project providers: the project's model and key win over the server's; the key is stored encrypted
and never shown, logged or traced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from orchestrator.secrets import generate_key
from tests.conftest import new_session
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import WorkerProcess, events_of

SECRET = "sk-project-only-secret-0123456789"


def test_a_project_provider_is_used_and_its_key_stays_secret(make_stack, fake: FakeModelServer,
                                                             tmp_path: Path) -> None:
    server_model = FakeModelServer().start()  # the server default: must not be called
    try:
        stack = make_stack(model_base_url=server_model.base_url, model_name="server-model", secret_key=generate_key())
        api, chat = stack.api, new_session(stack.api, tmp_path / "root")
        shown = api.ok("GET", f"/api/projects/{chat['project_id']}/provider")
        assert shown["source"] == "server" and shown["provider"]["model"] == "server-model"
        command = subprocess.run(
            [str(Path(sys.executable).parent / "boocode"), "project", "provider", chat["project_id"], "--base-url",
             fake.base_url, "--model", "deepseek-chat", "--api-key-stdin", "--json"], input=SECRET + "\n",
            capture_output=True, text=True, timeout=60,
            env={"BOOCODE_URL": api.url, "BOOCODE_TOKEN": api.token, "PATH": "/usr/bin",
                 "BOOCODE_DATA_DIR": str(tmp_path / "cli")})
        assert command.returncode == 0, command.stderr
        assert SECRET not in command.stdout
        set_view = json.loads(command.stdout)
        assert set_view["source"] == "project" and set_view["provider"]["api_key_set"] is True

        fake.script(Reply(text="from the project's model", usage=openai_usage(100, 5, cached=64)))
        worker = WorkerProcess(stack.settings, tmp_path, name="provider@localhost").start()
        try:
            run = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "hi"})["run"]
            final = api.wait_for_run(run["id"], timeout=60)
        finally:
            worker.stop()
        assert final["result"]["text"] == "from the project's model"
        assert server_model.requests == []
        assert fake.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
        assert fake.requests[0]["body"]["model"] == "deepseek-chat"

        # nowhere in the database in clear, nor in the API, events, spans or the worker's log
        with stack.db.transaction() as session:
            stored = session.execute(text("SELECT provider::text FROM projects WHERE id = :id"),
                                     {"id": chat["project_id"]}).scalar_one()
            everything = " ".join(session.execute(text(
                "SELECT coalesce(string_agg(attributes::text, ' '), '') FROM spans")).scalar_one())
        assert SECRET not in stored and "api_key_encrypted" in stored
        assert SECRET not in everything
        assert SECRET not in json.dumps(events_of(api, chat["id"]))
        assert SECRET not in json.dumps(api.ok("GET", f"/api/projects/{chat['project_id']}/provider"))
        assert SECRET not in worker.log()

        cleared = api.ok("DELETE", f"/api/projects/{chat['project_id']}/provider")
        assert cleared["source"] == "server"
    finally:
        server_model.stop()


def test_a_key_needs_a_server_secret_key(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    api, chat = stack.api, new_session(stack.api, tmp_path / "root")
    refused = api.request("PUT", f"/api/projects/{chat['project_id']}/provider",
                          json={"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key": "k"})
    assert refused.status_code == 422 and "BOOCODE_SECRET_KEY" in refused.json()["error"]["message"]
    keyless = api.request("PUT", f"/api/projects/{chat['project_id']}/provider",
                          json={"base_url": "http://127.0.0.1:9/v1", "model": "local-model", "vision": True})
    assert keyless.status_code == 200 and keyless.json()["provider"]["api_key_set"] is False
