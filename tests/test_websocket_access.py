"""An open WebSocket loses access within seconds, and no one can take every web thread with sockets.

Revocation tests run against the in-thread live server with the default access re-check interval;
the per-process cap test runs `boocode web` (gunicorn, gthread) because only there does each socket
hold one of a fixed number of threads.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import simple_websocket
from sqlalchemy import delete

from orchestrator.settings import Settings
from orchestrator.store import events
from orchestrator.store.database import Database
from orchestrator.store.models import Project
from tests.support import Api, WebProcess, collect_frames, wait_for

# The promise: access ends -> the socket closes within this long, with default settings.
ACCESS_BOUND_SECONDS = 3.0
PASSWORD = "correct horse battery"


def add_viewer(api: Api, project: dict, make_user, role: str = "viewer") -> tuple[str, Api]:  # type: ignore[no-untyped-def]
    user_id, token = make_user("viewer")
    api.ok("PUT", f"/api/projects/{project['id']}/members/{user_id}", {"role": role})
    return user_id, api.as_user(token)


def append(db: Database, session_id: str, kind: str) -> None:
    with db.transaction() as session:
        events.append_event(session, uuid.UUID(session_id), kind, {})


def close(*sockets: Any) -> None:
    """Close sockets from the client side; one the server already closed is fine."""
    for socket in sockets:
        try:
            socket.close()
        except simple_websocket.ConnectionClosed:
            pass


def wait_for_close(socket: Any, timeout: float = 15) -> tuple[int, str, float]:
    """Read (and drop) frames until the server closes: its close code, reason, and seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            socket.receive(timeout=max(0.01, timeout - (time.monotonic() - started)))
        except simple_websocket.ConnectionClosed as closed:
            return int(closed.reason), closed.message or "", time.monotonic() - started
    raise AssertionError(f"the socket was still open after {timeout}s")


def receive_type(socket: Any, kind: str, timeout: float = 10) -> dict:
    """The first frame of type `kind` (earlier frames, e.g. the backlog, are skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [frame] = collect_frames(socket, 1, timeout=deadline - time.monotonic())
        if frame["type"] == kind:
            return frame
    raise AssertionError(f"no {kind} frame within {timeout}s")


def handshake(url: str, session_id: str, token: str) -> httpx.Response:
    """A raw WebSocket upgrade request, to read the body of a refused handshake."""
    headers = {"Authorization": f"Bearer {token}", "Connection": "Upgrade", "Upgrade": "websocket",
               "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    return httpx.get(f"{url}/ws/sessions/{session_id}?since=0", headers=headers, timeout=10)


def refused_status(api: Api, session_id: str) -> int | None:
    """The HTTP status a refused handshake got, or None (and the socket closed again) if it opened."""
    try:
        api.websocket(session_id).close()
    except simple_websocket.ConnectionError as error:
        return error.status_code
    return None


def try_open(api: Api, session_id: str) -> Any | None:
    """An open socket, or None if the handshake was refused with 429."""
    try:
        return api.websocket(session_id)
    except simple_websocket.ConnectionError as error:
        if error.status_code == 429:
            return None
        raise


def assert_too_many(response: httpx.Response, setting: str) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "too_many_sockets" and setting in error["message"], error
    assert error["details"]["setting"] == setting


# ---------------------------------------------------------------- access re-checked on open sockets


def test_revoking_a_token_closes_its_socket_with_4401_and_spares_the_users_other_token(
        api: Api, project: dict, chat: dict, db: Database, make_user) -> None:  # type: ignore[no-untyped-def]
    _, first = add_viewer(api, project, make_user)
    second = first.as_user(first.ok("POST", "/api/tokens", {"name": "second"}, expected=201)["token"])
    [first_token] = [token for token in first.ok("GET", "/api/tokens")["tokens"] if token["name"] == "tests"]
    revoked = first.websocket(chat["id"])
    kept = second.websocket(chat["id"], subprotocol_token=True)
    try:
        assert collect_frames(revoked, 1)[0]["type"] == "session.created"  # it streams until revoked
        collect_frames(kept, 1)
        second.ok("DELETE", f"/api/tokens/{first_token['id']}")
        code, reason, seconds = wait_for_close(revoked)
        assert code == 4401 and "token" in reason, (code, reason)
        assert seconds <= ACCESS_BOUND_SECONDS, f"closed {seconds:.2f}s after the revocation"
        assert first.get("/api/me").status_code == 401

        append(db, chat["id"], "test.after_revocation")
        assert receive_type(kept, "test.after_revocation")["type"] == "test.after_revocation"
    finally:
        close(revoked, kept)


def test_removing_a_member_closes_their_socket_with_4403_while_the_owner_keeps_streaming(
        api: Api, project: dict, chat: dict, db: Database, make_user) -> None:  # type: ignore[no-untyped-def]
    member_id, member = add_viewer(api, project, make_user, role="member")
    theirs = member.websocket(chat["id"])
    owners = api.websocket(chat["id"])
    try:
        append(db, chat["id"], "test.before_removal")
        receive_type(theirs, "test.before_removal")
        receive_type(owners, "test.before_removal")
        api.ok("DELETE", f"/api/projects/{project['id']}/members/{member_id}")
        code, reason, seconds = wait_for_close(theirs)
        assert code == 4403 and "access" in reason, (code, reason)
        assert seconds <= ACCESS_BOUND_SECONDS, f"closed {seconds:.2f}s after the removal"

        append(db, chat["id"], "test.after_removal")
        assert receive_type(owners, "test.after_removal")["type"] == "test.after_removal"
        assert refused_status(member, chat["id"]) == 404  # and it cannot come back
    finally:
        close(theirs, owners)


def test_a_browser_socket_closes_with_4401_when_its_session_signs_out(
        api: Api, project: dict, chat: dict, db: Database, make_user, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    user_id, viewer = add_viewer(api, project, make_user)
    assert api.request("PUT", f"/api/users/{user_id}/password", json={"password": PASSWORD}).status_code == 204
    username = viewer.ok("GET", "/api/me")["user"]["username"]
    with httpx.Client(base_url=api.url, timeout=30) as browser:
        assert browser.post("/api/auth/login", json={"username": username, "password": PASSWORD}).status_code == 200
        ws_url = api.url.replace("http://", "ws://") + f"/ws/sessions/{chat['id']}?since=0"
        socket = simple_websocket.Client.connect(ws_url, headers={
            "Cookie": f"boocode_session={browser.cookies['boocode_session']}",
            "Origin": "http://" + httpx.URL(api.url).host})  # this client's Host has no port, as a browser's
        try:
            collect_frames(socket, 1)
            # A signed-in socket survives its re-checks (the cookie's token is checked like any other)...
            time.sleep(2.5 * settings.ws_access_check_seconds)
            append(db, chat["id"], "test.signed_in")
            receive_type(socket, "test.signed_in")
            # ...and ends with the browser session.
            assert browser.post("/api/auth/logout",
                                headers={"X-CSRF-Token": browser.cookies["boocode_csrf"]}).status_code == 204
            code, reason, seconds = wait_for_close(socket)
            assert code == 4401 and "browser session" in reason, (code, reason)
            assert seconds <= ACCESS_BOUND_SECONDS, f"closed {seconds:.2f}s after signing out"
        finally:
            close(socket)


def test_a_socket_closes_with_4404_when_its_session_is_deleted(api: Api, tmp_path: Path, db: Database) -> None:
    # There is no delete route for sessions or projects yet; delete the project in Postgres as one
    # would (its sessions and events go with it, ON DELETE CASCADE).
    root = tmp_path / "doomed"
    root.mkdir()
    project = api.ok("POST", "/api/projects", {"name": "doomed", "root_path": str(root)}, expected=201)["project"]
    chat = api.ok("POST", f"/api/projects/{project['id']}/sessions", {"title": "s"}, expected=201)["session"]
    socket = api.websocket(chat["id"])
    try:
        collect_frames(socket, 1)
        with db.transaction() as session:
            session.execute(delete(Project).where(Project.id == uuid.UUID(project["id"])))
        code, reason, seconds = wait_for_close(socket)
        assert code == 4404 and "no longer exists" in reason, (code, reason)
        assert seconds <= ACCESS_BOUND_SECONDS, f"closed {seconds:.2f}s after the deletion"
    finally:
        close(socket)


# ---------------------------------------------------------------- caps


def test_the_ninth_socket_of_one_user_is_refused_with_429_and_a_closed_one_frees_a_slot(
        api: Api, project: dict, chat: dict, make_user, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    assert settings.ws_max_per_user == 8  # the default
    _, viewer = add_viewer(api, project, make_user)
    _, other = add_viewer(api, project, make_user)
    sockets = [viewer.websocket(chat["id"], subprotocol_token=index % 2 == 1) for index in range(8)]
    try:
        for socket in sockets:
            collect_frames(socket, 1)
        assert refused_status(viewer, chat["id"]) == 429
        assert_too_many(handshake(api.url, chat["id"], viewer.token or ""), "BOOCODE_WS_MAX_PER_USER")
        assert refused_status(other, chat["id"]) is None  # the cap is per user

        sockets.pop().close()
        sockets.append(wait_for(lambda: try_open(viewer, chat["id"]), timeout=10, interval=0.1,
                                message="the closed socket's slot to be released"))
        assert refused_status(viewer, chat["id"]) == 429  # back at the cap: nothing leaked either way
    finally:
        close(*sockets)


@pytest.fixture
def gunicorn_web(settings: Settings, scratch_dir: Path, worker) -> Iterator[WebProcess]:  # type: ignore[no-untyped-def]
    """`boocode web` with 8 threads, so the default per-process cap is 8 - 4 = 4 sockets."""
    process = WebProcess(settings.replace(web_threads=8), scratch_dir).start()
    yield process
    process.stop()


def test_at_the_per_process_cap_health_and_rest_still_answer_under_gunicorn(
        gunicorn_web: WebProcess, api: Api, project: dict, chat: dict, make_user) -> None:  # type: ignore[no-untyped-def]
    threads, cap = gunicorn_web.settings.web_threads, gunicorn_web.settings.web_threads - 4
    viewers = [Api(gunicorn_web.url, add_viewer(api, project, make_user)[1].token) for _ in range(4)]
    sockets = [viewers[index % 2].websocket(chat["id"]) for index in range(cap)]  # two users, two sockets each
    try:
        for socket in sockets:
            collect_frames(socket, 1)
        # Every further socket, from users holding none, is refused before it takes a thread for good.
        for attempt in range(threads - cap + 1):
            assert refused_status(viewers[2 + attempt % 2], chat["id"]) == 429, f"attempt {attempt}"
        assert_too_many(handshake(gunicorn_web.url, chat["id"], viewers[2].token or ""), "BOOCODE_WS_MAX_PER_PROCESS")

        # The reserved threads answer /health and REST, several at once.
        def health(_: int) -> httpx.Response:
            return httpx.get(f"{gunicorn_web.url}/health", timeout=10)

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(health, range(4)))
        assert [answer.status_code for answer in answers] == [200] * 4, [answer.text for answer in answers]
        assert answers[0].json()["websockets"] == {"open": cap, "limit": cap}
        assert viewers[0].get("/api/me").status_code == 200

        sockets.pop().close()
        sockets.append(wait_for(lambda: try_open(viewers[2], chat["id"]), timeout=10, interval=0.1,
                                message="the closed socket's slot to be released"))
    finally:
        close(*sockets)
