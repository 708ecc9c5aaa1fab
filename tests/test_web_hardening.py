"""The web edge under attack: sign-in throttling, browser sessions that end on the server, Secure
cookies behind a TLS proxy, security headers, blobs that belong to one project, images that must
decode, and gunicorn's own refusals in the error shape. Real servers, sockets, Postgres and Redis."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from PIL import Image

from orchestrator.store import users
from tests.conftest import new_session
from tests.support import REPO, TINY_GIF, Api, LiveServer, free_port, wait_for

PASSWORD = "a long enough password"


def make_signer(stack: Any) -> str:
    with stack.db.transaction() as session:
        user = users.create_user(session, f"signer-{uuid.uuid4().hex[:6]}")
        users.set_password(session, user.id, PASSWORD)
        return user.username


def login(url: str, username: str, password: str = PASSWORD, *, address: str | None = None,
          headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {**({"X-Forwarded-For": address} if address else {}), **(headers or {})}
    return httpx.post(f"{url}/api/auth/login", json={"username": username, "password": password}, headers=sent)


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and isinstance(error["message"], str) and "details" in error
    return error


# --- sign-in throttling -------------------------------------------------------------------------

def test_five_failures_for_a_user_from_one_address_are_throttled_with_retry_after(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(trusted_proxies=1)
    url, name = stack.server.url, make_signer(stack)
    for _ in range(5):
        assert_error(login(url, name, "wrong password", address="192.0.2.10"), 401, "invalid_credentials")
    throttled = login(url, name, address="192.0.2.10")  # even the right password waits now
    assert_error(throttled, 429, "too_many_requests")
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert login(url, name, address="192.0.2.11").status_code == 200  # the same user elsewhere is not locked out

    # a success clears that user's count at that address: five more failures before the next refusal
    for _ in range(4):
        login(url, name, "wrong password", address="192.0.2.12")
    assert login(url, name, address="192.0.2.12").status_code == 200
    for _ in range(5):
        assert_error(login(url, name, "wrong password", address="192.0.2.12"), 401, "invalid_credentials")
    assert_error(login(url, name, address="192.0.2.12"), 429, "too_many_requests")


def test_twenty_failures_from_one_address_throttle_every_name_there_across_web_processes(make_stack) -> None:  # type: ignore[no-untyped-def]
    from web.app import create_app

    stack = make_stack(trusted_proxies=1)
    name = make_signer(stack)
    second = LiveServer(create_app(stack.settings)).start()  # another web process sharing Redis
    try:
        for index in range(20):
            server = stack.server.url if index % 2 else second.url
            assert_error(login(server, f"guess-{index}", "x", address="198.51.100.7"), 401, "invalid_credentials")
        for server in (stack.server.url, second.url):
            assert_error(login(server, name, address="198.51.100.7"), 429, "too_many_requests")
        assert login(second.url, name, address="198.51.100.8").status_code == 200
    finally:
        second.stop()


def test_the_throttle_lifts_after_its_window(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(login_failures_per_user=2, login_window_seconds=2)
    url, name = stack.server.url, make_signer(stack)
    login(url, name, "wrong")
    login(url, name, "wrong")
    refused = login(url, name)
    assert_error(refused, 429, "too_many_requests")
    time.sleep(int(refused.headers["Retry-After"]) + 0.2)
    assert login(url, name).status_code == 200


# --- browser sessions end on the server ---------------------------------------------------------

def session_cookie(response: httpx.Response) -> str:
    return response.cookies["boocode_session"]


def me(url: str, cookie: str) -> int:
    return httpx.get(f"{url}/api/me", cookies={"boocode_session": cookie}).status_code


def test_a_browser_session_ends_at_its_absolute_lifetime_even_in_use(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(browser_session_seconds=3, browser_session_idle_seconds=3600)
    url, name = stack.server.url, make_signer(stack)
    signed_in = login(url, name)
    assert "Max-Age=3" in signed_in.headers["set-cookie"]
    cookie, started = session_cookie(signed_in), time.monotonic()
    while time.monotonic() - started < 2.5:
        assert me(url, cookie) == 200
        time.sleep(0.5)
    wait_for(lambda: me(url, cookie) == 401, timeout=5, interval=0.2, message="the session to end")
    assert_error(httpx.get(f"{url}/api/me", cookies={"boocode_session": cookie}), 401, "unauthenticated")


def test_a_browser_session_ends_after_its_idle_time_and_use_keeps_it_alive(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(browser_session_idle_seconds=2)
    url, name = stack.server.url, make_signer(stack)
    cookie, started = session_cookie(login(url, name)), time.monotonic()
    while time.monotonic() - started < 4:  # used every half second: twice the idle time passes, still alive
        assert me(url, cookie) == 200
        time.sleep(0.5)
    time.sleep(2.6)
    assert me(url, cookie) == 401


def test_signing_out_ends_the_session_on_the_server(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    url, name = stack.server.url, make_signer(stack)
    with httpx.Client(base_url=url) as browser:
        assert browser.post("/api/auth/login", json={"username": name, "password": PASSWORD}).status_code == 200
        stolen = browser.cookies["boocode_session"]
        assert me(url, stolen) == 200
        out = browser.post("/api/auth/logout", headers={"X-CSRF-Token": browser.cookies["boocode_csrf"]})
        assert out.status_code == 204
    assert me(url, stolen) == 401


# --- Secure cookies behind a TLS proxy ----------------------------------------------------------

def cookie_lines(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


def test_cookies_are_secure_when_a_trusted_proxy_says_https(make_stack) -> None:  # type: ignore[no-untyped-def]
    behind_proxy = make_stack(trusted_proxies=1)
    name = make_signer(behind_proxy)
    https = login(behind_proxy.server.url, name, headers={"X-Forwarded-Proto": "https"})
    assert https.status_code == 200 and all("Secure" in line for line in cookie_lines(https))
    plain = login(behind_proxy.server.url, name)
    assert plain.status_code == 200 and not any("Secure" in line for line in cookie_lines(plain))

    direct = make_stack()  # no proxy trusted: anyone could send the header, so it changes nothing
    name = make_signer(direct)
    spoofed = login(direct.server.url, name, headers={"X-Forwarded-Proto": "https"})
    assert spoofed.status_code == 200 and not any("Secure" in line for line in cookie_lines(spoofed))


# --- security headers ---------------------------------------------------------------------------

def test_the_ui_and_the_api_carry_the_security_headers(api: Api) -> None:
    for response in (httpx.get(f"{api.url}/"), api.get("/api/me"), api.get("/api/no-such-route"),
                     httpx.get(f"{api.url}/static/app.js")):
        policy = response.headers["Content-Security-Policy"]
        for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'", "object-src 'none'",
                          "base-uri 'none'", "frame-ancestors 'none'", "img-src 'self' blob: data:"):
            assert directive in policy, (response.url, policy)
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"


def test_the_ui_runs_under_its_content_security_policy(site: Any, fake: Any, browser: Any) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    from tests.browser_support import PASSWORD as SITE_PASSWORD
    from tests.fakes.model_server import Reply, openai_usage

    fake.script(Reply(tool_calls=[("list_dir", {})], usage=openai_usage(100, 5)),
                Reply(text="Listed.", usage=openai_usage(120, 3, cached=64)))
    site.start_worker()
    context = browser.new_context()
    context.add_init_script("window.cspViolations = []; document.addEventListener('securitypolicyviolation', "
                            "(event) => window.cspViolations.push(event.violatedDirective + ' ' + event.blockedURI));")
    page = context.new_page()
    page.goto(site.api.url + "/")
    page.get_by_label("User name").fill(site.alice["username"])
    page.get_by_label("Password").fill(SITE_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    page.goto(site.api.url + f"/#/sessions/{site.chat['id']}")
    expect(page.locator("#connection")).to_have_text("live")  # the WebSocket is allowed by connect-src 'self'
    digest = site.api.request("POST", f"/api/sessions/{site.chat['id']}/attachments", content=TINY_GIF).json()["blob"]
    site.api.ok("POST", f"/api/sessions/{site.chat['id']}/messages",
                {"parts": [{"type": "text", "text": "list it"}, {"type": "image", "blob": digest,
                                                                  "media_type": "image/gif"}]})
    expect(page.locator(".message.assistant").last).to_contain_text("Listed.")
    page.wait_for_function("document.querySelector('.message.user img.thumb')?.naturalWidth === 1")  # a blob: URL
    page.get_by_role("tab", name="Trace").click()
    nested = page.locator('.span-row[data-kind="tool_call"]').first
    expect(nested).to_be_visible()
    # rows are indented by a style set through CSSOM, which the policy allows (a style attribute would not be)
    page.wait_for_function("[...document.querySelectorAll('.span-row [style*=\"padding-left\"]')]"
                           ".some((cell) => parseFloat(getComputedStyle(cell).paddingLeft) > 0)")
    assert page.evaluate("window.cspViolations") == []
    context.close()


# --- blobs belong to one project ----------------------------------------------------------------

def test_a_blob_of_another_project_can_be_neither_referenced_nor_downloaded(api: Api, make_user,  # type: ignore[no-untyped-def]
                                                                             tmp_path: Path) -> None:
    alice_id, alice_token = make_user("alice")
    bob_id, bob_token = make_user("bob")
    alice_chat, bob_chat = new_session(api, tmp_path / "alice"), new_session(api, tmp_path / "bob")
    api.ok("PUT", f"/api/projects/{alice_chat['project_id']}/members/{alice_id}", {"role": "member"})
    api.ok("PUT", f"/api/projects/{bob_chat['project_id']}/members/{bob_id}", {"role": "member"})
    alice, bob = api.as_user(alice_token), api.as_user(bob_token)

    secret = png_bytes((7, 11, 13))
    digest = alice.request("POST", f"/api/sessions/{alice_chat['id']}/attachments", content=secret).json()["blob"]
    image = {"type": "image", "blob": digest, "media_type": "image/png"}
    alice.ok("POST", f"/api/sessions/{alice_chat['id']}/messages", {"parts": [{"type": "text", "text": "x"}, image]})
    assert alice.get(f"/api/sessions/{alice_chat['id']}/attachments/{digest}").content == secret

    random_digest = uuid.uuid4().hex * 2
    def post_as_bob(blob: str) -> httpx.Response:
        return bob.post(f"/api/sessions/{bob_chat['id']}/messages",
                        {"parts": [{"type": "image", "blob": blob, "media_type": "image/png"}]})

    foreign, unknown = post_as_bob(digest), post_as_bob(random_digest)
    assert_error(foreign, 422, "validation_failed")
    assert foreign.text.replace(digest, "D") == unknown.text.replace(random_digest, "D")  # no oracle

    foreign = bob.get(f"/api/sessions/{bob_chat['id']}/attachments/{digest}")
    unknown = bob.get(f"/api/sessions/{bob_chat['id']}/attachments/{random_digest}")
    assert_error(foreign, 404, "not_found")
    assert foreign.text.replace(digest, "D") == unknown.text.replace(random_digest, "D")
    assert bob.get(f"/api/sessions/{alice_chat['id']}/attachments/{digest}").status_code == 404  # not a member

    # the same bytes uploaded to bob's own project are his to show; alice's copy is untouched
    mine = bob.request("POST", f"/api/sessions/{bob_chat['id']}/attachments", content=secret).json()["blob"]
    assert mine == digest and post_as_bob(digest).status_code == 202
    assert bob.get(f"/api/sessions/{bob_chat['id']}/attachments/{digest}").content == secret
    assert alice.get(f"/api/sessions/{alice_chat['id']}/attachments/{digest}").status_code == 200


# --- images must decode -------------------------------------------------------------------------

def png_bytes(colour: tuple[int, int, int] = (200, 10, 10), size: tuple[int, int] = (4, 3)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header for a huge image, with a few bytes of pixels: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def encoded(kind: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (5, 5), (1, 2, 3)).save(out, kind)
    return out.getvalue()


def test_uploads_that_only_look_like_images_are_refused_and_store_nothing(api: Api, db, chat: dict) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    def count() -> int:
        with db.transaction() as session:
            return session.execute(text("SELECT count(*) FROM blobs")).scalar_one()

    real = png_bytes()
    before = count()
    for label, data in [("a PNG header and garbage", real[:8] + os.urandom(200)),
                        ("a truncated PNG", real[:-20]),
                        ("a PNG claiming 3.6 billion pixels", png_claiming(60_000, 60_000)),
                        ("a PNG claiming 49 million pixels", png_claiming(7_000, 7_000)),
                        ("a GIF header only", b"GIF89a" + bytes(16)),
                        ("a JPEG header and garbage", b"\xff\xd8\xff\xe0" + os.urandom(300)),
                        ("a WebP header only", b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(8))]:
        response = api.request("POST", f"/api/sessions/{chat['id']}/attachments", content=data)
        error = assert_error(response, 422, "validation_failed")
        assert "image" in error["message"], label
    assert count() == before
    for data, media_type in [(real, "image/png"), (TINY_GIF, "image/gif"), (encoded("JPEG"), "image/jpeg"),
                             (encoded("WEBP"), "image/webp")]:
        response = api.request("POST", f"/api/sessions/{chat['id']}/attachments", content=data)
        assert response.status_code == 201 and response.json()["media_type"] == media_type, response.text


# --- gunicorn's own refusals --------------------------------------------------------------------

@pytest.fixture
def gunicorn_url(settings, tmp_path: Path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """`web.wsgi:app` under real gunicorn with our worker class, as `boocode web` runs it."""
    from web.server import WORKER_CLASS

    port = free_port()
    log = open(tmp_path / "gunicorn.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "--worker-class", WORKER_CLASS, "--workers", "1",
                                "--threads", "4", "--bind", f"127.0.0.1:{port}", "--no-control-socket",
                                "web.wsgi:app"], cwd=REPO, env={**os.environ, **settings.to_environment()},
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError((tmp_path / "gunicorn.log").read_text())
        try:
            return httpx.get(f"{url}/api/openapi.json", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, timeout=30, interval=0.2, message="gunicorn to answer")
        yield url
    finally:
        process.terminate()
        process.wait(20)
        log.close()


def raw_request(url: str, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `head` as is (no client library would send it) and read the whole answer."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    header_block, _, body = rest.partition(b"\r\n\r\n")
    headers = dict(line.decode().split(": ", 1) for line in header_block.split(b"\r\n") if line)
    return int(status_line.split()[1]), {key.lower(): value for key, value in headers.items()}, body


@pytest.mark.parametrize("head, status, code", [
    (b"GET /api/me?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    (b"GET /api/me HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n", 431, "headers_too_large"),
    (b"GET /api/me HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(150)) + b"\r\n", 431,
     "headers_too_large"),
    (b"GET /api/me HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n", 400, "bad_request"),
])
def test_gunicorns_own_refusals_are_in_the_error_shape(gunicorn_url: str, head: bytes, status: int, code: str) -> None:
    got, headers, body = raw_request(gunicorn_url, head)
    assert got == status and headers["content-type"] == "application/json", (got, headers, body[:200])
    error = json.loads(body)["error"]
    assert error["code"] == code and error["message"] and "details" in error


def test_requests_gunicorn_lets_through_reach_flask_with_its_headers(gunicorn_url: str) -> None:
    response = httpx.get(f"{gunicorn_url}/api/me")
    assert_error(response, 401, "unauthenticated")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    nul = httpx.post(f"{gunicorn_url}/api/auth/login", content=b'{"username": "a\\u0000", "password": "p"}',
                     headers={"Content-Type": "application/json"})
    assert_error(nul, 422, "validation_failed")
