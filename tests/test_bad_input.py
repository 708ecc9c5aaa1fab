"""Bad input gets the error shape with a 4xx, never a 500, and changes nothing: wrong types, unknown ids,
and what the database cannot hold (NUL, lone surrogates, deep nesting, integers past bigint)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from orchestrator.store.database import Database
from tests.support import Api

# Tables only the API writes are counted whole; tables a worker also writes (finishing runs left by
# earlier tests) are counted within the test's own project, which no worker is busy with.
COUNTS = {
    "users": "SELECT count(*) FROM users",
    "api_tokens": "SELECT count(*) FROM api_tokens",
    "projects": "SELECT count(*) FROM projects",
    "project_members": "SELECT count(*) FROM project_members",
    "blobs": "SELECT count(*) FROM blobs",
    "sessions": "SELECT count(*) FROM sessions WHERE project_id = :project",
    "messages": "SELECT count(*) FROM messages m JOIN sessions s ON s.id = m.session_id WHERE s.project_id = :project",
    "runs": "SELECT count(*) FROM runs WHERE project_id = :project",
    "steps": "SELECT count(*) FROM steps st JOIN runs r ON r.id = st.run_id WHERE r.project_id = :project",
    "events": "SELECT count(*) FROM events e JOIN sessions s ON s.id = e.session_id WHERE s.project_id = :project",
}


def table_counts(db: Database, project_id: str) -> dict[str, int]:
    with db.transaction() as session:
        return {table: session.execute(text(query), {"project": project_id}).scalar_one()
                for table, query in COUNTS.items()}


def write_operations(api: Api) -> list[tuple[str, str, bool]]:
    """(method, path, whether the body is required) for every route that takes a JSON body."""
    document = api.ok("GET", "/api/openapi.json")
    return [(method, path, entry["requestBody"]["required"]) for path, item in document["paths"].items()
            for method, entry in item.items() if "application/json" in entry.get("requestBody", {}).get("content", {})]


def fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda match: ids[match.group(1)], path)


def assert_error_shape(response, status: int | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and "details" in error
    return error


@pytest.fixture
def ids(api: Api, project: dict, chat: dict, make_user) -> dict[str, str]:  # type: ignore[no-untyped-def]
    user_id, _ = make_user("target")
    # a finished workflow run (cancelled at once, so no worker touches it while counts are compared)
    run = api.ok("POST", f"/api/sessions/{chat['id']}/workflows",
                 {"script": 'export const meta = {name: "w", description: "d"};\nreturn 1;'}, expected=202)["run"]
    api.ok("POST", f"/api/runs/{run['id']}/cancel")
    return {"project_id": project["id"], "session_id": chat["id"], "user_id": user_id,
            "approval_id": str(uuid.uuid4()), "run_id": run["id"], "trigger_id": str(uuid.uuid4()),
            "name": "review-diff"}


BAD_BODIES = [
    ("malformed json", b'{"name": "x",', "application/json", 400, "invalid_json"),
    ("empty body", b"", "application/json", 400, "invalid_json"),
    ("a list, not an object", b'["x"]', "application/json", 422, "validation_failed"),
    ("null", b"null", "application/json", 422, "validation_failed"),
    ("form data", b"name=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("oversize", b'{"text": "' + b"x" * (80 * 1024) + b'"}', "application/json", 413, "payload_too_large"),
]


def test_bad_bodies_on_every_write_route(api: Api, db: Database, ids: dict[str, str]) -> None:
    operations = write_operations(api)
    assert len(operations) >= 8
    before = table_counts(db, ids["project_id"])
    for method, path, required in operations:
        for label, raw, content_type, status, code in BAD_BODIES:
            if label == "empty body" and not required:
                continue  # no body means "no options" there
            response = api.request(method.upper(), fill(path, ids), content=raw,
                                   headers={"Content-Type": content_type})
            error = assert_error_shape(response, status)
            assert error["code"] == code, (method, path, label, response.text)
    assert table_counts(db, ids["project_id"]) == before


WRONG_TYPES = [
    ("post", "/api/projects", {"name": 5, "root_path": "/tmp"}),
    ("post", "/api/projects", {"name": "x"}),
    ("post", "/api/projects", {"name": "x", "root_path": "relative/path"}),
    ("post", "/api/projects", {"name": "x", "root_path": "/definitely/not/here"}),
    ("post", "/api/projects", {"name": "x", "root_path": "/tmp", "extra": True}),
    ("post", "/api/users", {"username": "Has Spaces"}),
    ("post", "/api/users", {"username": "ok", "is_admin": "yes"}),
    ("post", "/api/tokens", {"name": ""}),
    ("put", "/api/projects/{project_id}/members/{user_id}", {"role": "king"}),
    ("post", "/api/projects/{project_id}/sessions", {"title": ["a"]}),
    ("post", "/api/sessions/{session_id}/messages", {"text": ""}),
    ("post", "/api/sessions/{session_id}/messages", {"text": 12}),
    ("post", "/api/sessions/{session_id}/messages", {"text": "a", "parts": [{"type": "text", "text": "b"}]}),
    ("post", "/api/sessions/{session_id}/messages", {"parts": []}),
    ("post", "/api/sessions/{session_id}/messages", {"parts": [{"type": "video"}]}),
    ("post", "/api/sessions/{session_id}/messages", {"parts": [{"type": "text", "text": "   "}]}),
    ("post", "/api/sessions/{session_id}/messages", {"parts": [{"type": "image", "blob": "nothex",
                                                                "media_type": "image/png"}]}),
    ("post", "/api/sessions/{session_id}/messages", {"parts": [{"type": "image", "blob": "a" * 64,
                                                                "media_type": "image/png"}]}),
    ("post", "/api/sessions/{session_id}/probes", {"steps": "three"}),
    ("post", "/api/sessions/{session_id}/probes", {"steps": 0}),
    ("post", "/api/sessions/{session_id}/probes", {"steps": True}),
    ("post", "/api/sessions/{session_id}/probes", {"step_seconds": -1}),
    ("put", "/api/projects/{project_id}/policy", {"rules": [{"tool": "rm", "decision": "allow"}]}),
    ("put", "/api/projects/{project_id}/policy", {"rules": [{"tool": "run_command", "decision": "maybe"}]}),
    ("put", "/api/projects/{project_id}/policy", {"rules": [{"tool": "*", "decision": "ask", "when": "x"}]}),
    ("post", "/api/approvals/{approval_id}/decision", {"decision": "perhaps"}),
    ("put", "/api/projects/{project_id}/provider", {"base_url": "ftp://x", "model": "m"}),
    ("put", "/api/projects/{project_id}/provider", {"base_url": "http://x/v1"}),
    ("put", "/api/projects/{project_id}/provider", {"base_url": "http://x/v1", "model": "m", "api_key": "k"}),
    ("post", "/api/sessions/{session_id}/workflows", {}),
    ("post", "/api/sessions/{session_id}/workflows", {"name": 5}),
    ("post", "/api/sessions/{session_id}/workflows", {"name": "review-code", "script": "x"}),
    ("post", "/api/sessions/{session_id}/workflows", {"name": "no-such-workflow"}),
    ("post", "/api/sessions/{session_id}/workflows", {"name": "review-code", "caps": {"concurrency": 0}}),
    ("post", "/api/sessions/{session_id}/workflows", {"path": "../../etc/passwd"}),
    ("post", "/api/sessions/{session_id}/workflows", {"script": "return 1;"}),
    ("post", "/api/sessions/{session_id}/workflows", {"script": 'export const meta = {name: "w", description: "d"};\n'
                                                                "const x = ;"}),
    ("post", "/api/sessions/{session_id}/workflows", {"script": 'export const meta = {name: "w", description: "d"};\n'
                                                                "const t = Date.now();"}),
    ("post", "/api/sessions/{session_id}/workflows",
     {"script": 'export const meta = {name: `w${1}`, description: "d"};'}),
    ("post", "/api/runs/{run_id}/resume", {"script": "nope"}),
    ("post", "/api/runs/{run_id}/resume", {"script": 5}),
]


def test_wrong_types_and_values_are_rejected_with_details(api: Api, db: Database, ids: dict[str, str]) -> None:
    before = table_counts(db, ids["project_id"])
    for method, path, body in WRONG_TYPES:
        response = api.request(method.upper(), fill(path, ids), json=body)
        error = assert_error_shape(response, 422)
        assert error["details"], (method, path, body, response.text)
    assert table_counts(db, ids["project_id"]) == before


def test_unknown_ids_are_404(api: Api, db: Database, ids: dict[str, str]) -> None:
    before = table_counts(db, ids["project_id"])
    missing = str(uuid.uuid4())
    cases = [
        ("GET", f"/api/projects/{missing}", None),
        ("GET", f"/api/sessions/{missing}", None),
        ("GET", f"/api/runs/{missing}", None),
        ("POST", f"/api/runs/{missing}/cancel", None),
        ("POST", f"/api/sessions/{missing}/messages", {"text": "hi"}),
        ("POST", f"/api/projects/{missing}/sessions", {"title": "t"}),
        ("PUT", f"/api/projects/{ids['project_id']}/members/{missing}", {"role": "member"}),
        ("POST", f"/api/users/{missing}/tokens", {"name": "t"}),
        ("DELETE", f"/api/tokens/{missing}", None),
        ("GET", "/api/runs/not-a-uuid", None),
        ("GET", "/api/no-such-thing", None),
    ]
    for method, path, body in cases:
        response = api.request(method, path, json=body) if body is not None else api.request(method, path)
        assert_error_shape(response, 404)
    assert table_counts(db, ids["project_id"]) == before


def test_bad_query_strings_are_422(api: Api, ids: dict[str, str]) -> None:
    for path in (f"/api/sessions/{ids['session_id']}/events?since=-1",
                 f"/api/sessions/{ids['session_id']}/events?since=abc",
                 f"/api/sessions/{ids['session_id']}/events?bogus=1",
                 f"/api/projects/{ids['project_id']}/runs?status=sleeping",
                 f"/api/projects/{ids['project_id']}/runs?limit=100000"):
        assert_error_shape(api.get(path), 422)


def test_state_conflicts_are_409_and_change_nothing(api: Api, db: Database, ids: dict[str, str], worker) -> None:  # type: ignore[no-untyped-def]
    run = api.ok("POST", f"/api/sessions/{ids['session_id']}/probes", {"steps": 1, "step_seconds": 0})["run"]
    api.wait_for_run(run["id"])
    before = table_counts(db, ids["project_id"])
    assert_error_shape(api.post(f"/api/runs/{run['id']}/cancel"), 409)
    admin_id = api.ok("GET", "/api/me")["user"]["id"]
    owners = [member for member in api.ok("GET", f"/api/projects/{ids['project_id']}/members")["members"]
              if member["role"] == "owner"]
    assert [owner["user_id"] for owner in owners] == [admin_id]
    assert_error_shape(api.request("DELETE", f"/api/projects/{ids['project_id']}/members/{admin_id}"), 409)
    assert_error_shape(api.post("/api/users", {"username": api.ok("GET", "/api/me")["user"]["username"]}), 409)
    assert table_counts(db, ids["project_id"]) == before


def test_wrong_method_is_405_with_the_error_shape(api: Api, ids: dict[str, str]) -> None:
    assert_error_shape(api.request("PATCH", f"/api/sessions/{ids['session_id']}"), 405)


def test_project_root_must_exist(api: Api, tmp_path: Path) -> None:
    file_path = tmp_path / "a-file"
    file_path.write_text("not a directory")
    error = assert_error_shape(api.post("/api/projects", {"name": "f", "root_path": str(file_path)}), 422)
    assert "root_path" in error["message"]


# One valid body per JSON route; each string in it is replaced in turn by one the database cannot hold.
VALID_BODIES = {
    ("post", "/api/auth/login"): {"username": "someone", "password": "a password"},
    ("put", "/api/users/{user_id}/password"): {"password": "long enough"},
    ("post", "/api/users"): {"username": "fresh-user", "display_name": "Fresh"},
    ("post", "/api/users/{user_id}/tokens"): {"name": "t"},
    ("post", "/api/tokens"): {"name": "t"},
    ("post", "/api/projects"): {"name": "p", "root_path": "/tmp"},
    ("post", "/api/projects/{project_id}/members"): {"username": "someone", "role": "viewer"},
    ("put", "/api/projects/{project_id}/members/{user_id}"): {"role": "viewer"},
    ("post", "/api/projects/{project_id}/sessions"): {"title": "t"},
    ("put", "/api/sessions/{session_id}/title"): {"title": "renamed"},
    ("put", "/api/projects/{project_id}/provider"): {"base_url": "http://127.0.0.1:9/v1", "model": "m"},
    ("put", "/api/projects/{project_id}/policy"): {"rules": [{"tool": "read_file", "decision": "allow"}]},
    ("post", "/api/approvals/{approval_id}/decision"): {"decision": "deny", "reason": "no"},
    ("post", "/api/sessions/{session_id}/messages"): {"parts": [{"type": "text", "text": "hello"}]},
    ("post", "/api/sessions/{session_id}/probes"): {"steps": 1, "step_seconds": 0},
    ("post", "/api/sessions/{session_id}/workflows"): {"name": "review-code", "args": {"focus": "x"}, "dry_run": True},
    ("post", "/api/runs/{run_id}/resume"): {"script": 'export const meta = {name: "w", description: "d"};'},
    ("post", "/api/flows/validate"): {"text": "name: f\nsteps:\n  - id: a\n    code: 'return 1'\n"},
    ("post", "/api/projects/{project_id}/flows/{name}/runs"): {"input": {"diff": "x"}},
    ("post", "/api/projects/{project_id}/flows/{name}/estimate"): {"input": {"diff": "x"}},
    ("put", "/api/projects/{project_id}/flows/{name}/schedule"): {"enabled": False},
    ("post", "/api/flow-runs/{run_id}/rerun"): {"from_step": "a", "input": {"diff": "x"}},
    ("post", "/api/flows/{trigger_id}/trigger"): {"input": {"diff": "x"}},
}
UNSTORABLE = ["a\u0000b", "\ud800", "tail\udfff"]


def string_paths(value, path=()):  # type: ignore[no-untyped-def]
    """Where the strings are in a JSON value (keys included, as ('key', path))."""
    if isinstance(value, str):
        yield ("value", path)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield ("key", path + (key,))
            yield from string_paths(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_paths(item, path + (index,))


def replaced(value, where, bad):  # type: ignore[no-untyped-def]
    kind, path = where
    if not path:
        return bad
    head, rest = path[0], path[1:]
    if isinstance(value, list):
        return [replaced(item, (kind, rest), bad) if index == head else item for index, item in enumerate(value)]
    if kind == "key" and not rest:
        return {(bad if key == head else key): item for key, item in value.items()}
    return {key: replaced(item, (kind, rest), bad) if key == head else item for key, item in value.items()}


def raw_json(value) -> bytes:  # type: ignore[no-untyped-def]
    return json.dumps(value).encode()  # ASCII escapes, so a lone surrogate travels as \ud800


def test_every_json_route_has_a_valid_body_here(api: Api) -> None:
    assert {(method, path) for method, path, _ in write_operations(api)} == set(VALID_BODIES)


def test_nul_and_lone_surrogates_in_any_body_string_are_422_and_store_nothing(api: Api, db: Database,
                                                                              ids: dict[str, str]) -> None:
    before = table_counts(db, ids["project_id"])
    for (method, path), body in VALID_BODIES.items():
        for where in string_paths(body):
            for bad in UNSTORABLE:
                response = api.request(method.upper(), fill(path, ids), content=raw_json(replaced(body, where, bad)),
                                       headers={"Content-Type": "application/json"})
                error = assert_error_shape(response, 422)
                assert error["code"] == "validation_failed" and error["details"], (method, path, where, response.text)
                assert "cannot be stored" in error["message"]
    assert table_counts(db, ids["project_id"]) == before


def test_unauthenticated_login_with_a_nul_is_422(api: Api) -> None:
    anonymous = Api(api.url, None)
    response = anonymous.post("/api/auth/login", content=b'{"username": "a\\u0000", "password": "x"}',
                              headers={"Content-Type": "application/json"})
    assert assert_error_shape(response, 422)["details"][0]["path"] == "username"


def query_operations(api: Api) -> list[tuple[str, dict]]:
    document = api.ok("GET", "/api/openapi.json")
    return [(path, entry) for path, item in document["paths"].items() if not path.startswith("/ws/")
            for method, entry in item.items() if method == "get"]


def test_nul_in_any_query_string_or_path_is_422(api: Api, ids: dict[str, str]) -> None:
    ids = {**ids, "digest": "a" * 64, "task_id": str(uuid.uuid4()), "token_id": str(uuid.uuid4())}
    checked = 0
    for path, entry in query_operations(api):
        names = [parameter["name"] for parameter in entry.get("parameters", []) if parameter["in"] == "query"]
        for name in names or ["anything"]:
            for bad in ("a%00b", "%00", "%ED%A0%80%00"):
                response = api.get(f"{fill(path, ids)}?{name}={bad}")
                assert_error_shape(response, 422)
                checked += 1
    assert checked > 40
    for bad in ("a%00b", "%00"):
        response = api.get(f"/api/sessions/{ids['session_id']}/attachments/{bad}")
        assert assert_error_shape(response, 422)["details"][0]["path"] == "digest"


def test_deep_nesting_is_400_on_every_json_route(api: Api, db: Database, ids: dict[str, str]) -> None:
    before = table_counts(db, ids["project_id"])
    deep_list = b"[" * 100_000 + b"]" * 100_000
    deep_object = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    just_too_deep = b"[" * 65 + b"]" * 65  # parses, but nests past the limit
    for method, path, _ in write_operations(api):
        for raw in (deep_list, deep_object, just_too_deep):
            response = api.request(method.upper(), fill(path, ids), content=raw,
                                   headers={"Content-Type": "application/json"})
            if response.status_code == 413:
                continue  # the server's body size limit came first; either way, a 4xx that changes nothing
            assert assert_error_shape(response, 400)["code"] == "too_deeply_nested", (method, path)
    assert table_counts(db, ids["project_id"]) == before


@pytest.mark.parametrize("query", [
    "events?since=9223372036854775808", "events?since=99999999999999999999999999", "messages?after=9223372036854775808",
    "spans?cursor=9223372036854775808", "spans?turn=2147483648", "spans?turn=-1", "spans?limit=9223372036854775808",
    "events?since=-9223372036854775809", "events?limit=" + "9" * 5000,
])
def test_integers_past_the_column_range_are_422(api: Api, ids: dict[str, str], query: str) -> None:
    assert_error_shape(api.get(f"/api/sessions/{ids['session_id']}/{query}"), 422)


def test_integers_in_range_still_work(api: Api, ids: dict[str, str]) -> None:
    session = ids["session_id"]
    assert api.get(f"/api/sessions/{session}/events?since=9223372036854775807").json() == {"events": []}
    assert api.get(f"/api/sessions/{session}/spans?turn=2147483647&cursor=9223372036854775807").status_code == 200
    assert api.get(f"/api/runs/{ids['run_id']}/messages?after=9223372036854775807").json() == {"messages": []}


def test_numbers_the_database_cannot_hold_in_bodies_are_refused(api: Api, db: Database, ids: dict[str, str]) -> None:
    before = table_counts(db, ids["project_id"])
    session = ids["session_id"]
    cases = [
        (f"/api/sessions/{session}/workflows", b'{"name": "review-code", "args": {"n": 99999999999999999999}}', 422),
        (f"/api/sessions/{session}/workflows", b'{"name": "review-code", "caps": {"max_tokens": 9223372036854775808}}',
         422),
        (f"/api/sessions/{session}/workflows", b'{"name": "review-code", "args": {"n": 1e400}}', 422),
        (f"/api/sessions/{session}/workflows", b'{"name": "review-code", "args": NaN}', 400),
        (f"/api/sessions/{session}/probes", b'{"steps": 1, "step_seconds": NaN}', 400),
        (f"/api/sessions/{session}/probes", b'{"steps": 1, "step_seconds": Infinity}', 400),
        (f"/api/sessions/{session}/probes", b'{"steps": 18446744073709551616}', 422),
        (f"/api/sessions/{session}/messages", b'{"text": "\xed\xa0\x80"}', 400),  # a surrogate encoded in the bytes
        (f"/api/sessions/{session}/messages", b'{"text": "\xff"}', 400),
    ]
    for path, raw, status in cases:
        response = api.post(path, content=raw, headers={"Content-Type": "application/json"})
        assert_error_shape(response, status)
    assert table_counts(db, ids["project_id"]) == before


def test_odd_bytes_in_the_csrf_header_are_403_not_500(api: Api, make_user, db: Database) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.store import users

    user_id, _ = make_user("csrf")
    with db.transaction() as session:
        users.set_password(session, uuid.UUID(user_id), "a long password")
        name = users.load_user(session, uuid.UUID(user_id)).username
    browser = Api(api.url, None)
    assert browser.post("/api/auth/login", {"username": name, "password": "a long password"}).status_code == 200
    response = browser.http.post("/api/tokens", json={"name": "t"}, headers={"X-CSRF-Token": b"caf\xe9"})
    assert assert_error_shape(response, 403)["code"] == "csrf_failed"
