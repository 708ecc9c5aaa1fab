"""Schemathesis against our own OpenAPI document: no generated request may get a 5xx.

A bounded run (a few examples per operation, a hard time limit) of the `schemathesis` CLI as a real
process, against a live server with its own database and Redis prefix (the fuzzer's junk and failed
sign-ins stay there), authenticated as a normal user who owns one project. Path parameters are
pinned to real objects of that project so requests get past the 404s and into the views; bodies and
query strings are generated, valid and invalid alike.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from orchestrator.store import approvals, runs, subagents, users
from tests.conftest import new_session
from tests.support import TINY_GIF

# The run's budget grows with the API: about 1.3 s per operation was measured on 2 loaded cores (67
# operations in 95 s, both phases); the limit is there to stop a hung run, not to time the server.
SECONDS_PER_OPERATION = 2.5
EXAMPLES_PER_OPERATION = 25


def fuzzing_target(stack, tmp_path: Path) -> tuple[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    """A normal user's token, and real ids for every path parameter of the API."""
    chat = new_session(stack.api, tmp_path / "project")
    project_id = chat["project_id"]
    admin_id = stack.api.ok("GET", "/api/me")["user"]["id"]
    with stack.db.transaction() as session:
        user = users.create_user(session, "fuzzer")
        _, token = users.create_token(session, user.id, "fuzzing")
        spare, _ = users.create_token(session, user.id, "revocable")  # DELETE /api/tokens/{id} may revoke this one
        user_id = str(user.id)
    stack.api.ok("PUT", f"/api/projects/{project_id}/members/{user_id}", {"role": "owner"})
    run = stack.api.ok("POST", f"/api/sessions/{chat['id']}/workflows",
                       {"script": 'export const meta = {name: "w", description: "d"};\nreturn 1;'})["run"]
    stack.api.ok("POST", f"/api/runs/{run['id']}/cancel")
    with stack.db.transaction() as session:
        workflow_run = runs.load_run(session, uuid.UUID(run["id"]))
        approval = approvals.request_approval(session, workflow_run, "turn/0000/tool/0", "run_command",
                                              {"argv": ["ls"]}, None)
        parent = runs.create_run(session, project_id=uuid.UUID(project_id), session_id=uuid.UUID(chat["id"]),
                                 kind="agent", input={}, created_by=None)
        task, _ = subagents.spawn(session, parent, uuid.uuid4(), "look", {"label": "l"}, follow_up=False)
        parent.status = task.status = "completed"
    digest = stack.api.request("POST", f"/api/sessions/{chat['id']}/attachments", content=TINY_GIF).json()["blob"]
    stack.api.ok("POST", f"/api/sessions/{chat['id']}/messages",
                 {"parts": [{"type": "text", "text": "see"}, {"type": "image", "blob": digest,
                                                              "media_type": "image/gif"}]})
    # user_id is the admin's: the fuzzer may demote or remove them, never lock itself out
    return token, {"project_id": project_id, "session_id": chat["id"], "run_id": run["id"], "user_id": admin_id,
                   "approval_id": str(approval.id), "task_id": str(task.id), "token_id": str(spare.id),
                   "digest": digest}


def test_schemathesis_finds_no_server_error(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    token, ids = fuzzing_target(stack, tmp_path)
    config = tmp_path / "schemathesis.toml"
    config.write_text("[parameters]\n" + "".join(f'"path.{name}" = "{value}"\n' for name, value in ids.items()))
    command = [sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(config), "run",
               f"{stack.server.url}/api/openapi.json", "--checks", "not_a_server_error",
               "--max-examples", str(EXAMPLES_PER_OPERATION), "--phases", "examples,coverage,fuzzing",
               "--header", f"Authorization: Bearer {token}", "--exclude-path-regex", "^/ws/",
               "--exclude-path", "/health",  # 503 with no worker running is its documented answer
               "--request-timeout", "20", "--seed", "12",
               "--workers", "1"]  # one: hypothesis' lambda descriptions call ast.parse, not thread-safe on 3.11
    document = stack.api.ok("GET", "/api/openapi.json")
    operations = sum(len(item) for item in document["paths"].values())
    result = subprocess.run(command, capture_output=True, text=True, timeout=30 + SECONDS_PER_OPERATION * operations,
                            cwd=tmp_path)
    report = result.stdout[-20000:] + result.stderr[-4000:]
    assert result.returncode == 0, report
    assert "No issues found" in result.stdout or "passed" in result.stdout, report
