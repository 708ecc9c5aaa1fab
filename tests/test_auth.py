"""Every route authenticates and authorizes.

The route list comes from the served OpenAPI document (itself checked against Flask's URL map), so
a new route is covered by these tests the day it is added.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import simple_websocket

from tests.support import TINY_GIF, Api

PROJECT_SCOPED = re.compile(r"{(project_id|session_id|run_id|approval_id|trigger_id)}")
ADMIN_ONLY = {("get", "/api/users"), ("post", "/api/users"), ("post", "/api/users/{user_id}/tokens"),
              ("post", "/api/projects")}
OWNER_ONLY = {("put", "/api/projects/{project_id}/members/{user_id}"), ("post", "/api/projects/{project_id}/members"),
              ("delete", "/api/projects/{project_id}/members/{user_id}"),
              ("put", "/api/projects/{project_id}/policy"), ("put", "/api/projects/{project_id}/provider"),
              ("delete", "/api/projects/{project_id}/provider"),
              ("get", "/api/projects/{project_id}/flows/triggers"), ("delete", "/api/flow-triggers/{trigger_id}")}
OWNER_READS = {("get", "/api/projects/{project_id}/flows/triggers")}  # reads a viewer is refused (403) too


def operations(api: Api) -> list[tuple[str, str, dict]]:
    document = api.ok("GET", "/api/openapi.json")
    return [(method, path, entry) for path, item in document["paths"].items() for method, entry in item.items()
            if entry["security"] and not path.startswith("/ws/")]


def sample_body(method: str, path: str, tmp_path: Path) -> dict | None:
    bodies = {
        ("post", "/api/users"): {"username": f"u{uuid.uuid4().hex[:8]}"},
        ("post", "/api/users/{user_id}/tokens"): {"name": "t"},
        ("post", "/api/tokens"): {"name": "t"},
        ("post", "/api/projects"): {"name": "p", "root_path": str(tmp_path)},
        ("put", "/api/projects/{project_id}/members/{user_id}"): {"role": "viewer"},
        ("post", "/api/projects/{project_id}/members"): {"username": "nobody-by-that-name", "role": "viewer"},
        ("post", "/api/projects/{project_id}/sessions"): {"title": "t"},
        ("put", "/api/sessions/{session_id}/title"): {"title": "renamed"},
        ("post", "/api/sessions/{session_id}/messages"): {"text": "hello"},
        ("post", "/api/sessions/{session_id}/probes"): {"steps": 1, "step_seconds": 0},
        ("put", "/api/projects/{project_id}/policy"): {"rules": []},
        ("put", "/api/projects/{project_id}/provider"): {"base_url": "http://127.0.0.1:9/v1", "model": "m"},
        ("post", "/api/approvals/{approval_id}/decision"): {"decision": "deny"},
        ("post", "/api/sessions/{session_id}/workflows"): {"name": "review-code", "dry_run": True},
        ("put", "/api/users/{user_id}/password"): {"password": "long enough"},
        ("post", "/api/flows/validate"): {"text": "name: f\nsteps: []\n"},
        ("post", "/api/flow-runs/{run_id}/rerun"): {"from_step": "a"},
        ("put", "/api/projects/{project_id}/flows/{name}/schedule"): {"enabled": True},
    }
    return bodies.get((method, path))


def call(api: Api, method: str, path: str, ids: dict[str, str], tmp_path: Path, token: str | None = None):  # type: ignore[no-untyped-def]
    def value(name: str) -> str:
        if name == "run_id" and path.startswith("/api/flow-runs/"):
            name = "flow_run_id"  # those routes take only flow runs
        return ids.get(name, str(uuid.uuid4()))

    url = re.sub(r"{(\w+)}", lambda match: value(match.group(1)), path)
    body = sample_body(method, path, tmp_path)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return api.http.request(method.upper(), url, json=body, headers=headers)


@pytest.fixture
def world(api: Api, project: dict, chat: dict, make_user, db) -> dict[str, str]:  # type: ignore[no-untyped-def]
    from orchestrator.store import approvals, runs, subagents

    # a workflow run: the runs routes take any run, the workflow routes only workflow runs
    run = api.ok("POST", f"/api/sessions/{chat['id']}/workflows",
                  {"script": 'export const meta = {name: "w", description: "d"};\nreturn 1;'})["run"]
    # a flow run (the flow-run routes take only those), cancelled at once: nothing for a worker to pick up
    flow_run = api.ok("POST", f"/api/projects/{project['id']}/flows/review-diff/runs",
                      {"input": {"diff": "x"}, "session_id": chat["id"]})["run"]
    api.ok("POST", f"/api/flow-runs/{flow_run['id']}/cancel")
    trigger = api.ok("POST", f"/api/projects/{project['id']}/flows/review-diff/triggers", expected=201)["trigger"]
    # a flow with a schedule, turned on: the schedule routes name it ({name})
    flows = Path(project["root_path"]) / ".boocode" / "flows"
    flows.mkdir(parents=True)
    (flows / "nightly.yaml").write_text("name: nightly\nschedule: {cron: '0 3 * * *'}\n"
                                        "steps:\n  - {id: a, kind: code, code: '1'}\n")
    api.ok("PUT", f"/api/projects/{project['id']}/flows/nightly/schedule", {"enabled": True})
    with db.transaction() as session:
        approval = approvals.request_approval(session, runs.load_run(session, uuid.UUID(run["id"])),
                                              "turn/0000/tool/0", "run_command", {"argv": ["ls"]}, None)
        # a background subagent (the subagent routes take only those), finished so it can be retried
        parent = runs.create_run(session, project_id=uuid.UUID(project["id"]), session_id=uuid.UUID(chat["id"]),
                                 kind="agent", input={}, created_by=None)
        task, _ = subagents.spawn(session, parent, uuid.uuid4(), "look", {"label": "l"}, follow_up=False)
        parent.status = task.status = "completed"  # nothing for a worker to pick up
    digest = api.request("POST", f"/api/sessions/{chat['id']}/attachments", content=TINY_GIF).json()["blob"]
    api.ok("POST", f"/api/sessions/{chat['id']}/messages",
           {"parts": [{"type": "text", "text": "see"}, {"type": "image", "blob": digest, "media_type": "image/gif"}]})
    other_id, _ = make_user("other")
    return {"project_id": project["id"], "session_id": chat["id"], "run_id": run["id"], "user_id": other_id,
            "approval_id": str(approval.id), "digest": digest, "task_id": str(task.id),
            "flow_run_id": flow_run["id"], "trigger_id": trigger["id"], "name": "nightly"}


def test_every_route_without_a_token_is_401(api: Api, world: dict, tmp_path: Path) -> None:
    checked = 0
    for method, path, _ in operations(api):
        for token in (None, "bct_not-a-real-token", "garbage"):
            response = call(api, method, path, world, tmp_path, token)
            assert response.status_code == 401, (method, path, token, response.text)
            assert response.json()["error"]["code"] == "unauthenticated"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        checked += 1
    assert checked >= 20


def test_a_non_member_gets_404_and_learns_nothing(api: Api, world: dict, make_user, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, token = make_user("stranger")
    scoped = [(method, path) for method, path, _ in operations(api) if PROJECT_SCOPED.search(path)]
    assert len(scoped) >= 12
    for method, path in scoped:
        response = call(api, method, path, world, tmp_path, token)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
        if "{project_id}" not in path:  # a 404 must not reveal which project a session or run is in
            assert world["project_id"] not in response.text, (method, path, response.text)
    listed = api.as_user(token).ok("GET", "/api/projects")["projects"]
    assert world["project_id"] not in {project["id"] for project in listed}


def test_a_viewer_reads_but_every_write_is_403(api: Api, world: dict, make_user, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    viewer_id, token = make_user("viewer")
    api.ok("PUT", f"/api/projects/{world['project_id']}/members/{viewer_id}", {"role": "viewer"})
    before = api.ok("GET", f"/api/sessions/{world['session_id']}")["session"]["last_seq"]
    for method, path, _ in operations(api):
        if not PROJECT_SCOPED.search(path):
            continue
        response = call(api, method, path, world, tmp_path, token)
        if method == "get" and (method, path) not in OWNER_READS:
            assert response.status_code == 200, (method, path, response.text)
        else:
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["error"]["code"] == "forbidden"
    after = api.ok("GET", f"/api/sessions/{world['session_id']}")["session"]["last_seq"]
    assert after == before


def test_a_member_writes_but_cannot_manage_members(api: Api, world: dict, make_user, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    member_id, token = make_user("member")
    api.ok("PUT", f"/api/projects/{world['project_id']}/members/{member_id}", {"role": "member"})
    member = api.as_user(token)
    posted = member.post(f"/api/sessions/{world['session_id']}/messages", {"text": "hi"})
    assert posted.status_code == 202
    for method, path in OWNER_ONLY:
        assert call(api, method, path, world, tmp_path, token).status_code == 403


def test_admin_routes_are_403_for_other_users(api: Api, world: dict, make_user, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, token = make_user("plain")
    for method, path in ADMIN_ONLY:
        response = call(api, method, path, world, tmp_path, token)
        assert response.status_code == 403, (method, path, response.text)


def test_revoked_tokens_stop_working(api: Api, make_user) -> None:  # type: ignore[no-untyped-def]
    _, token = make_user("revoker")
    user = api.as_user(token)
    second = user.ok("POST", "/api/tokens", {"name": "second"}, expected=201)
    second_api = api.as_user(second["token"])
    assert second_api.get("/api/me").status_code == 200
    user.ok("DELETE", f"/api/tokens/{second['details']['id']}")
    assert second_api.get("/api/me").status_code == 401


def test_websocket_checks_the_token_and_membership(api: Api, world: dict, make_user) -> None:  # type: ignore[no-untyped-def]
    session_id = world["session_id"]
    with pytest.raises(simple_websocket.ConnectionError) as missing:
        Api(api.url, None).websocket(session_id)
    assert missing.value.status_code == 401
    with pytest.raises(simple_websocket.ConnectionError) as wrong:
        Api(api.url, "bct_wrong").websocket(session_id, subprotocol_token=True)
    assert wrong.value.status_code == 401
    _, stranger = make_user("ws-stranger")
    with pytest.raises(simple_websocket.ConnectionError) as hidden:
        api.as_user(stranger).websocket(session_id)
    assert hidden.value.status_code == 404
    socket = api.websocket(session_id, subprotocol_token=True)
    try:
        assert socket.subprotocol == "boocode.v1"
        first = socket.receive(timeout=10)
        assert first is not None and '"seq":1' in first
    finally:
        socket.close()


def test_health_is_public_and_reports_each_service(api: Api, worker) -> None:  # type: ignore[no-untyped-def]
    response = Api(api.url, None).get("/health")
    body = response.json()
    assert response.status_code == 200, body
    assert body["checks"]["postgres"]["ok"] and body["checks"]["redis"]["ok"]
    assert worker.name in body["checks"]["workers"]["names"]
