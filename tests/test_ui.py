"""Browser sign-in and the web UI, driven in Debian's Chromium by Playwright against a live server, a real
worker and the fake model. Screenshots go to test-artifacts/ for a reviewer to look at."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import simple_websocket

from orchestrator.store import users
from tests.browser_support import ARTIFACTS, PASSWORD, sign_in
from tests.conftest import new_session
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import cli_environment, run_cli


def test_password_sign_in_uses_an_http_only_cookie_and_refuses_cross_site_requests(site: Any, tmp_path: Path) -> None:
    base = site.api.url
    with httpx.Client(base_url=base) as browser:
        wrong = browser.post("/api/auth/login", json={"username": site.alice["username"], "password": "nope nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_credentials"
        unknown = browser.post("/api/auth/login", json={"username": "nobody", "password": PASSWORD})
        assert unknown.status_code == 401 and unknown.json() == wrong.json()

        signed_in = browser.post("/api/auth/login", json={"username": site.alice["username"], "password": PASSWORD})
        assert signed_in.status_code == 200 and signed_in.json()["user"]["username"] == site.alice["username"]
        cookies = {line.split("=", 1)[0]: line for line in signed_in.headers.get_list("set-cookie")}
        assert "HttpOnly" in cookies["boocode_session"] and "SameSite=Strict" in cookies["boocode_session"]
        assert "HttpOnly" not in cookies["boocode_csrf"]
        assert browser.get("/api/me").json()["user"]["username"] == site.alice["username"]

        # a state-changing request without the CSRF header (what a forged cross-site form sends) is refused
        path = f"/api/projects/{site.chat['project_id']}/sessions"
        forged = browser.post(path, json={"title": "forged"})
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_failed"
        assert browser.post(path, json={"title": "x"}, headers={"X-CSRF-Token": "guess"}).status_code == 403
        made = browser.post(path, json={"title": "mine"}, headers={"X-CSRF-Token": browser.cookies["boocode_csrf"]})
        assert made.status_code == 201

        # a WebSocket opened with the cookie from another origin is refused; from our own origin it works
        ws_url = base.replace("http://", "ws://") + f"/ws/sessions/{site.chat['id']}?since=0"
        cookie_header = {"Cookie": f"boocode_session={browser.cookies['boocode_session']}"}
        with pytest.raises(simple_websocket.ConnectionError):
            simple_websocket.Client.connect(ws_url, headers={**cookie_header, "Origin": "http://evil.example"})
        # (this client sends `Host` without the port, as a browser would for a default port; Origin must match it)
        own_origin = "http://" + httpx.URL(base).host
        ours = simple_websocket.Client.connect(ws_url, headers={**cookie_header, "Origin": own_origin},
                                               subprotocols=["boocode.v1"])
        assert '"seq"' in ours.receive(timeout=10)
        ours.close()

        assert browser.post("/api/auth/logout", headers={"X-CSRF-Token": browser.cookies["boocode_csrf"]}) \
            .status_code == 204
        session_cookie = cookies["boocode_session"].split(";")[0].split("=", 1)[1]
        assert httpx.get(f"{base}/api/me", cookies={"boocode_session": session_cookie}).status_code == 401

    # an admin sets a password from the CLI (read from stdin, never from the command line)
    changed = run_cli("user", "password", site.alice["username"], input="a brand new secret\n",
                      environment=cli_environment(base, site.api.token, tmp_path))
    assert "password set for" in changed.stdout
    login = {"username": site.alice["username"], "password": "a brand new secret"}
    assert httpx.post(f"{base}/api/auth/login", json=login).status_code == 200
    assert httpx.post(f"{base}/api/auth/login", json={**login, "password": PASSWORD}).status_code == 401


def test_sign_in_open_a_session_and_watch_the_answer_stream_in(site: Any, fake: FakeModelServer, browser: Any) -> None:
    from playwright.sync_api import expect

    release = threading.Event()
    fake.script(Reply(text="The project has one file, main.py, which prints hello.", chunk_size=4, chunk_delay=0.05,
                      hold=release, hold_after=3, usage=openai_usage(200, 20)))
    site.start_worker()
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(site.api.url + "/")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "sign-in.png"))
        page.get_by_label("User name").fill(site.alice["username"])
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Projects")).to_be_visible()
        expect(page.locator("#who")).to_have_text("Alice")
        page.get_by_role("link", name="p", exact=True).click()
        expect(page.get_by_role("heading", name="p", exact=True)).to_be_visible()
        page.get_by_role("link", name="s", exact=True).click()
        expect(page.get_by_role("heading", name="s", exact=True)).to_be_visible()
        expect(page.locator("#connection")).to_have_text("live")

        page.get_by_label("Message").fill("what is in this project?")
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".message.user")).to_contain_text("what is in this project?")
        # the first chunks arrive while the model is still answering (how many depends on when the
        # worker's coalesced delta events go out)
        expect(page.locator(".message.live")).to_contain_text("The")
        expect(page.locator(".message.assistant:not(.live)")).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "chat-streaming.png"))

        # a reload in the middle of the run lands in the same place and the stream goes on
        page.reload()
        expect(page.locator(".message.user")).to_contain_text("what is in this project?")
        expect(page.locator("#connection")).to_have_text("live")
        release.set()
        answer = page.locator(".message.assistant:not(.live)")
        expect(answer).to_contain_text("The project has one file, main.py, which prints hello.")
        expect(page.locator(".message.live")).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "chat-answered.png"))

        # what the page shows is what the API holds
        messages = site.api.ok("GET", f"/api/sessions/{site.chat['id']}/messages")["messages"]
        assert [message["role"] for message in messages] == ["user", "assistant"]
        assert page.locator(".message").count() == 2

        # another project's session: "not found"
        stranger_chat = new_session(site.api, Path(site.settings.data_dir) / f"other-{uuid.uuid4().hex[:6]}")
        page.goto(site.api.url + f"/#/sessions/{stranger_chat['id']}")
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()

        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    finally:
        release.set()


def test_tool_calls_diffs_approvals_and_a_viewer_without_write_controls(site: Any, fake: FakeModelServer,
                                                                       browser: Any) -> None:
    from playwright.sync_api import expect

    root = Path(site.api.ok("GET", f"/api/projects/{site.chat['project_id']}")["project"]["root_path"])
    (root / "notes.txt").write_text("first line\nold line\nlast line\n")
    fake.script(Reply(tool_calls=[("edit_file", {"path": "notes.txt", "old_text": "old line", "new_text": "new line"})],
                      usage=openai_usage(100, 10)),
                Reply(tool_calls=[("run_command", {"argv": ["echo", "approved and ran"]})], usage=openai_usage(120, 8)),
                Reply(text="Edited notes.txt and ran the command.", usage=openai_usage(140, 9)))
    with site.db.transaction() as session:
        bob = users.create_user(session, f"bob-{uuid.uuid4().hex[:6]}")
        users.set_password(session, bob.id, PASSWORD)
        bob_name, bob_id = bob.username, str(bob.id)
    site.api.ok("PUT", f"/api/projects/{site.chat['project_id']}/members/{bob_id}", {"role": "viewer"})
    site.start_worker()

    def signed_in(username: str) -> Any:
        page = sign_in(browser, site, username, f"#/sessions/{site.chat['id']}", viewport=(1100, 900))
        expect(page.locator("#connection")).to_have_text("live")
        return page

    page = signed_in(site.alice["username"])
    page.get_by_label("Message").fill("tidy notes.txt, then run the check")
    page.get_by_role("button", name="Send").click()
    diff = page.get_by_label("diff of notes.txt")
    expect(diff.locator(".removed")).to_have_text("-old line")
    expect(diff.locator(".added")).to_have_text("+new line")
    card = page.get_by_role("group", name="approval for run_command")
    expect(card).to_contain_text('{"argv":["echo","approved and ran"]}')
    expect(page.get_by_role("button", name="Stop")).to_be_visible()

    # the session list says this session waits for a person
    listed = site.api.ok("GET", f"/api/projects/{site.chat['project_id']}/sessions")["sessions"]
    assert [chat["activity"] for chat in listed] == ["waiting"]
    overview = sign_in(browser, site, site.alice["username"], f"#/projects/{site.chat['project_id']}")
    expect(overview.locator(".badge.waiting")).to_have_text("waiting for approval")

    viewer = signed_in(bob_name)  # a viewer sees the same, with no way to change anything
    expect(viewer.get_by_role("group", name="approval for run_command")).to_be_visible()
    expect(viewer.get_by_role("button", name="Approve")).to_have_count(0)
    expect(viewer.get_by_label("Message")).to_have_count(0)
    expect(viewer.get_by_role("button", name="Stop")).to_have_count(0)
    viewer.screenshot(path=str(ARTIFACTS / "viewer.png"))

    page.screenshot(path=str(ARTIFACTS / "approval.png"))
    card.get_by_role("button", name="Approve").click()
    expect(page.locator(".message.assistant").last).to_contain_text("Edited notes.txt and ran the command.")
    expect(card).to_have_count(0)
    result = page.locator("details.result", has_text="run_command")
    result.locator("summary").click()
    expect(result.locator("pre")).to_contain_text("approved and ran")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    expect(viewer.locator(".message.assistant").last).to_contain_text("Edited notes.txt")
    expect(viewer.get_by_role("group", name="approval for run_command")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "tools-and-diff.png"), full_page=True)
    assert (root / "notes.txt").read_text() == "first line\nnew line\nlast line\n"


def test_background_subagents_pane_cancel_retry_and_a_toast(site: Any, fake: FakeModelServer, browser: Any) -> None:
    from playwright.sync_api import expect

    gate = threading.Event()
    held: list[str] = []

    def respond(body: dict) -> Reply:
        tools = {tool["function"]["name"] for tool in body.get("tools") or []}
        if "spawn_subagent" in tools:  # the chat agent
            if body["messages"][-1]["role"] == "user":
                return Reply(tool_calls=[("spawn_subagent", {"prompt": "slow job", "label": "slowpoke",
                                                             "follow_up": False})], usage=openai_usage(50, 5))
            return Reply(text="Started a background subagent.", usage=openai_usage(60, 5))
        if not held:  # the first subagent hangs until cancelled; its retry answers at once
            held.append("x")
            return Reply(text="never mind", hold=gate, usage=openai_usage(10, 2))
        return Reply(text="slow job done", usage=openai_usage(10, 3))

    fake.responder = respond
    site.start_worker()
    try:
        page = sign_in(browser, site, site.alice["username"], f"#/sessions/{site.chat['id']}", viewport=(1100, 900))
        expect(page.locator("#connection")).to_have_text("live")
        page.get_by_label("Message").fill("run the slow job in the background")
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".message.assistant").last).to_contain_text("Started a background subagent.")
        pane = page.get_by_role("complementary", name="Background subagents")
        expect(pane.locator("h2 .badge")).to_have_text("1 running")
        first = pane.locator("li", has_text="slowpoke").first
        expect(first.locator(".badge")).to_have_text("running")
        page.screenshot(path=str(ARTIFACTS / "subagents-running.png"))

        first.get_by_role("button", name="Cancel").click()
        expect(first.locator(".badge")).to_have_text("cancelled")
        expect(pane.locator("h2 .badge")).to_be_hidden()
        first.get_by_role("button", name="Retry").click()
        expect(pane.locator("li")).to_have_count(2)
        expect(page.locator(".toast", has_text="subagent slowpoke completed")).to_be_visible()
        done = pane.locator("li", has_text="completed")
        done.locator("summary").click()
        expect(done.locator("pre")).to_have_text("slow job done")
        expect(page.locator(".message.live")).to_have_count(0)  # a subagent's streamed text stays out of the chat
        expect(page.locator(".message")).to_have_count(4)
        page.screenshot(path=str(ARTIFACTS / "subagents-done.png"))
    finally:
        gate.set()
    listed = site.api.ok("GET", f"/api/sessions/{site.chat['id']}/subagents")["subagents"]
    assert sorted(item["status"] for item in listed) == ["cancelled", "completed"]
