"""How the web UI's chat scales with the length of a session, in Debian's Chromium.

    .venv/bin/python -m bench.ui_long_session [--messages 2000] [--baseline 200] [--repeat 3]

Baseline: a session of `--baseline` messages. Ours: a session of `--messages` messages, same text.
For each, the median over `--repeat` page loads of the time from navigation until the newest message
is on screen, plus the number of message elements in the page and the JS heap in use. The chat keeps
only a window of the conversation in the page, so the ratio of the load times should stay near 1
while the conversation grows tenfold. Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
import uuid

from bench.common import scratch
from orchestrator import services
from orchestrator.domain.enums import MessageRole
from orchestrator.store import projects, sessions, users
from tests.support import LiveServer
from web.app import create_app

WORDS = "the agent read the file, found the function and explained what it does " * 3


def fill(db, owner, count: int) -> str:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        project = projects.create_project(session, f"p{uuid.uuid4().hex[:6]}", "/tmp", users.load_user(session, owner))
        chat = sessions.create_session(session, project.id, f"{count} messages", owner)
        for index in range(count):
            role = MessageRole.USER if index % 2 == 0 else MessageRole.ASSISTANT
            sessions.add_message(session, chat.id, role, [{"type": "text", "text": f"message {index}: {WORDS}"}])
        return str(chat.id)


def measure(browser, url: str, token: str, chat_id: str, count: int, repeat: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    times, nodes, heap = [], 0, 0.0
    for _ in range(repeat):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(url + "/")
        page.evaluate("(token) => sessionStorage.setItem('boocode.token', token)", token)
        started = time.perf_counter()
        page.goto(url + f"/#/sessions/{chat_id}")
        page.wait_for_function(f"""() => {{
            const last = [...document.querySelectorAll('.message')].at(-1);
            if (!last || !last.textContent.includes('message {count - 1}:')) return false;
            const box = last.getBoundingClientRect();
            return box.top < innerHeight && box.bottom > 0;
        }}""", timeout=120000)
        times.append(time.perf_counter() - started)
        nodes = page.locator(".message").count()
        heap = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : 0") / 1e6
        context.close()
    return {"seconds": statistics.median(times), "nodes": nodes, "heap_mb": heap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--baseline", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with scratch() as place:
        db = services.make_database(place.settings)
        with db.transaction() as session:
            owner = users.create_user(session, "bench", is_admin=True)
            _, token = users.create_token(session, owner.id, "bench")
            owner_id = owner.id
        small, large = fill(db, owner_id, options.baseline), fill(db, owner_id, options.messages)
        server = LiveServer(create_app(place.settings)).start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=shutil.which("chromium") or "/usr/bin/chromium", headless=True,
                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--enable-precise-memory-info"])
                base = measure(browser, server.url, token, small, options.baseline, options.repeat)
                ours = measure(browser, server.url, token, large, options.messages, options.repeat)
                browser.close()
        finally:
            server.stop()
            db.engine.dispose()
    for name, figures, count in (("baseline", base, options.baseline), ("ours", ours, options.messages)):
        print(f"{name:9} {count:6} messages: newest on screen after {figures['seconds'] * 1000:7.0f} ms, "
              f"{figures['nodes']:4} message elements in the page, JS heap {figures['heap_mb']:.1f} MB")
    print(f"ratio (ours / baseline): load time {ours['seconds'] / base['seconds']:.2f} for "
          f"{options.messages / options.baseline:.0f}x the messages; "
          f"elements {ours['nodes'] / max(1, base['nodes']):.2f}; "
          f"heap {ours['heap_mb'] / max(0.001, base['heap_mb']):.2f}")


if __name__ == "__main__":
    main()
