"""Browser tests' shared parts (a pytest plugin, loaded by conftest): Debian's Chromium driven by
Playwright, a live server with a real worker and the fake model, a member who signs in with a password,
and where screenshots go (test-artifacts/, for a reviewer to look at)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator.store import users
from tests.conftest import new_session
from tests.fakes.model_server import FakeModelServer
from tests.support import REPO, WorkerProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
PASSWORD = "correct horse battery"


@pytest.fixture
def site(make_stack, fake: FakeModelServer, tmp_path: Path):  # type: ignore[no-untyped-def]
    stack = make_stack(model_base_url=fake.base_url, model_name="gpt-4o-mini", model_api_key="sk-fake",
                       model_vision=True)
    chat = new_session(stack.api, tmp_path / "root")
    with stack.db.transaction() as session:
        alice = users.create_user(session, f"alice-{uuid.uuid4().hex[:6]}", display_name="Alice")
        users.set_password(session, alice.id, PASSWORD)
        stack.alice = {"id": str(alice.id), "username": alice.username}
    stack.api.ok("PUT", f"/api/projects/{chat['project_id']}/members/{stack.alice['id']}", {"role": "member"})
    stack.chat = chat
    workers: list[WorkerProcess] = []
    stack.start_worker = lambda: workers.append(WorkerProcess(stack.settings, tmp_path, name="ui@localhost").start())
    yield stack
    for worker in workers:
        worker.stop()


@pytest.fixture
def browser() -> Any:
    """Debian's chromium, headless, driven by Playwright (no browser is downloaded)."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        yield launched
        launched.close()


def sign_in(browser: Any, site: Any, username: str, path: str = "/", viewport: tuple[int, int] = (1280, 900)) -> Any:
    """A new browser context signed in with a password, showing `path` (a `#/…` route)."""
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}).new_page()
    page.goto(site.api.url + "/")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    if path != "/":
        page.goto(site.api.url + "/" + path.lstrip("/"))
    return page
