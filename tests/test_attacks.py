"""A hostile project owner, end to end: the real API, a real Celery worker process, the fake model.

The owner (not a server admin) allows run_command in their project's policy, and "the model" runs
the command set an attacker would: the worker's environment through /proc, every process'
environment, `ps e`, the server's data directory and credentials file, the Postgres socket, Redis
and Postgres over 127.0.0.1, /etc/shadow. None of the server's secrets or the admin token may appear
in any tool output, message, event, span, journal row or the worker's log; the admin routes stay
closed to the owner.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from orchestrator.cli.client import save_credentials
from orchestrator.secrets import generate_key
from orchestrator.store import users
from tests.fakes.model_server import FakeModelServer, Reply
from tests.support import WorkerProcess


def hostile_commands(data_dir: Path) -> list[list[str]]:
    return [
        ["sh", "-c", "tr '\\0' '\\n' < /proc/$PPID/environ"],
        ["sh", "-c", "tr '\\0' '\\n' < /proc/1/environ"],
        ["sh", "-c", "for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done; ls /proc"],
        ["ps", "axe"],
        ["cat", str(data_dir / "credentials.json")],
        ["ls", "-la", str(data_dir)],
        ["sh", "-c", "ls -la /var/run/postgresql /run /var/lib/postgresql /root 2>&1; cat /etc/shadow"],
        ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "--scan"],
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", "select datname from pg_database"],
        ["python3", "-c", "import socket; s = socket.create_connection(('127.0.0.1', 5432), 3); "
                          "print('CONNECTED ' + 'TO POSTGRES')"],
        ["sh", "-c", "env; cat ~/.boocode/credentials.json; cat /proc/self/mountinfo"],
    ]


@pytest.fixture
def hostile(make_stack, fake: FakeModelServer, tmp_path: Path, scratch_dir: Path):  # type: ignore[no-untyped-def]
    data_dir = scratch_dir / f"data-{uuid.uuid4().hex[:6]}"
    stack = make_stack(model_base_url=fake.base_url, model_name="gpt-4o-mini",
                       model_api_key="sk-live-model-key-do-not-leak", secret_key=generate_key(), data_dir=data_dir,
                       agent_max_steps=4)
    save_credentials(stack.settings, stack.server.url, stack.api.token)  # what `boocode up` leaves for the CLI
    with stack.db.transaction() as session:
        owner = users.create_user(session, f"mallory-{uuid.uuid4().hex[:6]}")
        _, owner_token = users.create_token(session, owner.id, "mallory's laptop")
    root = tmp_path / "mallory-project"
    root.mkdir()
    project = stack.api.ok("POST", "/api/projects", {"name": "mallory", "root_path": str(root)},
                           expected=201)["project"]
    stack.api.ok("POST", f"/api/projects/{project['id']}/members", {"username": owner.username, "role": "owner"})
    worker = WorkerProcess(stack.settings, tmp_path, name=f"attacked-{uuid.uuid4().hex[:4]}@localhost").start()
    yield stack, stack.api.as_user(owner_token), project, data_dir, worker
    worker.stop()


def test_a_hostile_owner_reads_no_secret_of_the_server(hostile, fake: FakeModelServer) -> None:  # type: ignore[no-untyped-def]
    stack, mallory, project, data_dir, worker = hostile
    assert mallory.get("/api/users").status_code == 403  # an owner is not an admin
    assert mallory.post("/api/projects", {"name": "x", "root_path": "/"}).status_code == 403
    mallory.ok("PUT", f"/api/projects/{project['id']}/policy",
               {"rules": [{"tool": "run_command", "decision": "allow"}]})
    commands = hostile_commands(data_dir)
    fake.script(Reply(tool_calls=[("run_command", {"argv": argv, "timeout_seconds": 20}) for argv in commands]),
                Reply(text="done looking around"))
    chat = mallory.ok("POST", f"/api/projects/{project['id']}/sessions", {"title": "recon"}, expected=201)["session"]
    posted = mallory.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "look around"}, expected=202)
    run = mallory.wait_for_run(posted["run"]["id"], timeout=120)
    assert run["result"]["text"] == "done looking around"

    messages = mallory.ok("GET", f"/api/sessions/{chat['id']}/messages")["messages"]
    results = [part for message in messages if message["role"] == "tool" for part in message["parts"]
               if part["type"] == "tool_result"]
    assert len(results) == len(commands)
    outputs = "\n".join(part["content"] for part in results)
    # The commands really ran, in a sandbox that shows them nothing of the server:
    assert "No such file or directory" in outputs  # the data directory and credentials are not there
    assert "CONNECTED TO POSTGRES" not in outputs  # no network: 127.0.0.1:5432 is not the server's Postgres
    assert "boocode_test" not in outputs  # psql listed no database

    secrets = {"model key": stack.settings.model_api_key, "secret key": stack.settings.secret_key,
               "admin token": stack.api.token, "database url": stack.settings.database_url,
               "database name": stack.settings.database_url.rsplit("/", 1)[-1],
               "redis prefix": f"{stack.settings.redis_prefix}:"}
    events = mallory.ok("GET", f"/api/sessions/{chat['id']}/events?since=0&limit=500")["events"]
    spans = mallory.ok("GET", f"/api/sessions/{chat['id']}/spans?limit=200")["spans"]
    with psycopg.connect(stack.settings.database_url.replace("+psycopg", "")) as connection:
        stored = "\n".join(str(row) for table in ("messages", "events", "spans", "steps", "runs")
                           for row in connection.execute(f"select row_to_json(t)::text from {table} t"))
    assert "look around" in stored and "credentials.json" in stored  # the dump holds the run
    places = {"tool output": outputs, "messages": str(messages), "events": str(events), "spans": str(spans),
              "database rows": stored, "worker log": worker.log()}
    for place, text in places.items():
        for name, secret in secrets.items():
            if name in ("database name", "redis prefix", "database url") and place == "worker log":
                continue  # the worker's own log names its database and queues; what matters is the tools' output
            assert secret not in text, f"the {name} reached the {place}"
    assert "sk-live-model-key" not in places["worker log"] and stack.api.token not in places["worker log"]
