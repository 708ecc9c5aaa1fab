"""The web UI's views beyond the chat basics, in Debian's Chromium against a live server, a real worker
and the fake model: trace, cache and timeline (checked number by number against the API), image
attachments with a lightbox, follow-ups queued behind a busy run, members and roles, workflows run
and resumed from the browser (with cached agents), and a 2,000-message session."""

from __future__ import annotations

import base64
import struct
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

from orchestrator.domain.enums import MessageRole
from orchestrator.store import sessions as chat_sessions
from orchestrator.store import users
from tests.browser_support import ARTIFACTS, sign_in
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import wait_for


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A small solid-colour PNG, made here so the test needs no image library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def hand_over(page: Any, selector: str, how: str, name: str, data: bytes) -> None:
    """Drop (`drop`) or paste (`paste`) a PNG file on an element, as the browser does for a person."""
    page.evaluate("""([selector, how, name, data]) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([Uint8Array.from(atob(data), (c) => c.charCodeAt(0))], name, {type: "image/png"}));
        const options = {bubbles: true, cancelable: true};
        const event = how === "drop" ? new DragEvent("drop", {dataTransfer: transfer, ...options})
                                     : new ClipboardEvent("paste", {clipboardData: transfer, ...options});
        document.querySelector(selector).dispatchEvent(event);
    }""", [selector, how, name, base64.b64encode(data).decode()])


def project_root(site: Any) -> Path:
    return Path(site.api.ok("GET", f"/api/projects/{site.chat['project_id']}")["project"]["root_path"])


def percent(fraction: float | None) -> str:
    return "–" if fraction is None else f"{int(fraction * 100 + 0.5)}%"


def dollars(value: float) -> str:
    return f"${value:.4f}"


def hit_class(fraction: float | None) -> str:
    return "hit-none" if fraction is None else "hit-good" if fraction >= 0.6 else "hit-fair" if fraction >= 0.3 \
        else "hit-poor"


def test_trace_cache_and_timeline_show_what_the_api_holds(site: Any, fake: FakeModelServer, browser: Any) -> None:
    from playwright.sync_api import expect

    (project_root(site) / "main.py").write_text("print('hello')\n")
    release = threading.Event()
    fake.script(
        Reply(tool_calls=[("read_file", {"path": "main.py"})], usage=openai_usage(1000, 10)),        # cold: 0%
        Reply(tool_calls=[("glob", {"pattern": "*.py"})], usage=openai_usage(1100, 12, cached=800)),  # 73%
        Reply(text="main.py prints hello.", usage=openai_usage(1200, 20, cached=900)),                # 75%
        Reply(text="Nothing else: just main.py.", usage=openai_usage(1500, 30, cached=600),           # 40%
              chunk_size=4, chunk_delay=0.05, hold=release, hold_after=4))
    site.start_worker()
    chat_id = site.chat["id"]
    page = sign_in(browser, site, site.alice["username"], f"#/sessions/{chat_id}", viewport=(1280, 700))
    expect(page.locator("#connection")).to_have_text("live")
    page.get_by_label("Message").fill("what does main.py do?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".message.assistant").last).to_contain_text("main.py prints hello.")
    page.get_by_label("Message").fill("anything else?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".message.live")).to_be_visible()

    # while the model still answers, its span runs and ticks in the trace
    page.get_by_role("tab", name="Trace").click()
    running = page.locator('.span-row.running[data-kind="model_call"]')
    expect(running).to_have_count(1)
    before = running.locator('[data-field="duration"]').inner_text()
    page.wait_for_timeout(1300)
    assert running.locator('[data-field="duration"]').inner_text() != before
    page.screenshot(path=str(ARTIFACTS / "trace-live.png"))
    release.set()
    expect(page.locator(".span-row.running")).to_have_count(0)

    every = site.api.ok("GET", f"/api/sessions/{chat_id}/spans?limit=200")["spans"]
    assert len(every) == 12  # 2 runs, 4 turns, 4 model calls, 2 tool calls
    summary = site.api.ok("GET", f"/api/sessions/{chat_id}/trace-summary")["summary"]
    figures = page.get_by_label("Trace summary")
    expect(figures.locator('[data-field="model_calls"]')).to_have_text(str(summary["model_calls"]))
    expect(figures.locator('[data-field="tool_calls"]')).to_have_text(str(summary["tool_calls"]))
    expect(figures.locator('[data-field="input_total"]')).to_have_text(f"{summary['tokens']['input_total']:,}")
    expect(figures.locator('[data-field="cache_read"]')).to_have_text(f"{summary['tokens']['cache_read']:,}")
    expect(figures.locator('[data-field="output"]')).to_have_text(f"{summary['tokens']['output']:,}")
    expect(figures.locator('[data-field="cost"]')).to_have_text(dollars(summary["cost"]["total"]))
    expect(figures.locator('[data-field="cache_hit_rate"]')).to_have_text(percent(summary["cache_hit_rate"]))
    assert summary["tokens"]["input_total"] == 4800 and summary["tokens"]["cache_read"] == 2300
    rows = page.locator(".span-row")
    expect(rows).to_have_count(len(every))
    # each model call's row shows the tokens and cost the API recorded
    for span in (span for span in every if span["kind"] == "model_call"):
        usage, row = span["attributes"]["usage"], page.locator(f'.span-row[data-span="{span["id"]}"]')
        expect(row.locator('[data-field="tokens"]')).to_contain_text(
            f"{usage['input_total']:,} in · {usage['cache_read']:,} cached · {usage['output']:,} out")
        expect(row.locator('[data-field="cost"]')).to_have_text(dollars(span["attributes"]["cost"]["total"]))
    # the tree: turns under runs, calls under turns
    run_row = page.locator('.span-row[data-kind="run"]').first
    expect(run_row).to_have_attribute("aria-level", "1")
    expect(page.locator('.span-row[data-kind="tool_call"]').first).to_have_attribute("aria-level", "3")

    # keyset pages of 10: a "Load more" until every span is in
    page.get_by_label("Spans per page").select_option("10")
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(10)
    page.get_by_role("button", name="Load more").click()
    expect(rows).to_have_count(len(every))
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()

    # filters: one tool; then one run
    page.get_by_label("Spans per page").select_option("100")
    page.get_by_label("Tool").fill("read_file")
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(1)
    rows.first.locator(".span-name").click()
    details = page.locator(".span-details")
    expect(details).to_contain_text('"path": "main.py"')
    expect(details).to_contain_text("print('hello')")
    page.get_by_label("Tool").fill("")
    second_run = next(span["run_id"] for span in reversed(every) if span["kind"] == "run")
    page.get_by_label("Run", exact=True).select_option(second_run)
    page.get_by_role("button", name="Apply").click()
    run_spans = site.api.ok("GET", f"/api/runs/{second_run}/spans")["spans"]
    expect(rows).to_have_count(len(run_spans))
    run_summary = site.api.ok("GET", f"/api/runs/{second_run}/trace-summary")["summary"]
    expect(figures.locator('[data-field="input_total"]')).to_have_text(f"{run_summary['tokens']['input_total']:,}")
    page.get_by_label("Run", exact=True).select_option("")
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(len(every))
    page.screenshot(path=str(ARTIFACTS / "trace.png"), full_page=True)

    # the cache view: one row per model call, bars and badges from the API's numbers
    page.get_by_role("tab", name="Cache").click()
    calls = [span for span in every if span["kind"] == "model_call"]
    cache_rows = page.locator(".cache-row")
    expect(cache_rows).to_have_count(len(calls))
    for row, span in zip(cache_rows.all(), calls):
        usage, cache = span["attributes"]["usage"], span["attributes"]["cache"]
        rate = usage["cache_read"] / usage["input_total"]
        expect(row.locator(".seg.read")).to_have_attribute("data-tokens", str(usage["cache_read"]))
        expect(row.locator(".seg.write")).to_have_attribute("data-tokens", str(usage["cache_write"]))
        expect(row.locator(".seg.uncached")).to_have_attribute("data-tokens", str(usage["uncached"]))
        badge = row.locator('[data-field="hit_rate"]')
        expect(badge).to_have_text(percent(rate))
        expect(badge).to_have_class(f"badge hit {hit_class(rate)}")
        expected_cause = "" if cache["status"] == "hit" else \
            f"{cache['status']}: {cache['detail'] or cache['cause']}"
        expect(row.locator('[data-field="cause"]')).to_have_text(expected_cause or cache["status"])
    assert [hit_class(s["attributes"]["usage"]["cache_read"] / s["attributes"]["usage"]["input_total"])
            for s in calls] == ["hit-poor", "hit-good", "hit-good", "hit-fair"]
    expect(cache_rows.first.locator('[data-field="cause"]')).to_contain_text("cold: first call of the session")
    footer = page.get_by_label("Session totals")
    expect(footer.locator('[data-field="cache_hit_rate"]')).to_have_text(percent(summary["cache_hit_rate"]))
    expect(footer.locator('[data-field="saved"]')).to_have_text(dollars(summary["cost"]["saved"]))
    page.screenshot(path=str(ARTIFACTS / "cache.png"), full_page=True)

    # the timeline: one entry per turn; choosing the first scrolls the chat back to it
    turns = page.get_by_role("navigation", name="Session timeline").locator("button.turn")
    expect(turns).to_have_count(sum(1 for span in every if span["kind"] == "turn"))
    expect(turns.first).to_contain_text("gpt-4o-mini · 1,010 tokens")
    expect(turns.first).to_contain_text("1 tool call")
    # a lower window, so the conversation (eight messages, some of one line) is surely taller than
    # its list: at 700 px it was only just, and once in about ten runs the first answer never left the view
    page.set_viewport_size({"width": 1280, "height": 480})
    page.get_by_role("tab", name="Chat").click()
    # scroll to the end until the first answer is out of view: the shown panel may still be laying out
    # (the footer and the messages re-measure) when a single scroll runs, and then it did not stick
    page.wait_for_function("""() => {
      const list = document.querySelector('.messages');
      list.scrollTop = list.scrollHeight;
      const first = list.querySelector('.message.assistant').getBoundingClientRect();
      return first.bottom - first.height / 2 < list.getBoundingClientRect().top;
    }""", polling=100, timeout=10000)
    first_answer = page.locator(".message.assistant").first
    expect(first_answer).not_to_be_in_viewport(ratio=0.5)
    turns.first.click()
    expect(first_answer).to_be_in_viewport(ratio=0.9)
    expect(first_answer).to_have_class("message assistant highlight")
    page.screenshot(path=str(ARTIFACTS / "timeline.png"))
    page.set_viewport_size({"width": 1280, "height": 700})
    # the same page in the dark theme (the page follows the system's setting)
    page.emulate_media(color_scheme="dark")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(21, 24, 28)"
    page.screenshot(path=str(ARTIFACTS / "chat-dark.png"))
    page.get_by_role("tab", name="Trace").click()
    page.screenshot(path=str(ARTIFACTS / "trace-dark.png"))


def test_images_follow_ups_queued_and_members_managed_by_an_owner(site: Any, fake: FakeModelServer, browser: Any,
                                                                    tmp_path: Path) -> None:
    from playwright.sync_api import expect

    release = threading.Event()
    fake.script(Reply(text="I see a red rectangle.", chunk_size=4, chunk_delay=0.05, hold=release, hold_after=4,
                      usage=openai_usage(300, 8)),
                Reply(text="The follow-up answer.", usage=openai_usage(320, 5)))
    site.start_worker()
    picture = tmp_path / "red.png"
    picture.write_bytes(png(40, 30, (220, 30, 30)))
    chat_id = site.chat["id"]
    try:
        page = sign_in(browser, site, site.alice["username"], f"#/sessions/{chat_id}")
        expect(page.locator("#connection")).to_have_text("live")
        page.locator("#attach-picker").set_input_files(str(picture))  # the file picker
        previews = page.get_by_label("Attachments").locator(".preview")
        expect(previews).to_have_count(1)
        expect(previews.locator("button")).to_have_count(1)  # uploaded: it can be removed again
        # an image dropped on the composer is attached too, and can be taken off before sending
        hand_over(page, "form.send", "drop", "dropped.png", png(8, 8, (0, 0, 255)))
        expect(previews).to_have_count(2)
        expect(page.get_by_role("button", name="Remove dropped.png")).to_be_visible()
        # a pasted image as well
        page.get_by_label("Message").focus()
        hand_over(page, "textarea[name=text]", "paste", "pasted.png", png(6, 6, (0, 200, 0)))
        expect(previews).to_have_count(3)
        page.get_by_role("button", name="Remove dropped.png").click()
        page.get_by_role("button", name="Remove pasted.png").click()
        expect(previews).to_have_count(1)
        page.screenshot(path=str(ARTIFACTS / "attach-preview.png"))
        page.get_by_label("Message").fill("what is in this picture?")
        page.get_by_role("button", name="Send").click()
        expect(previews).to_have_count(0)
        thumb = page.locator(".message.user img.thumb")
        expect(thumb).to_have_count(1)
        # (not wait_for_function: its polling evaluates a string, which the page's policy refuses)
        expect(thumb).to_have_js_property("naturalWidth", 40)

        # a follow-up sent while the agent is still answering waits its turn, and says so
        expect(page.locator(".message.live")).to_be_visible()
        page.get_by_label("Message").fill("and then?")
        page.get_by_label("Message").press("Enter")  # Enter sends
        queued = page.locator(".message.user.queued")
        expect(queued).to_contain_text("and then?")
        expect(queued.locator(".badge")).to_have_text("queued")
        expect(page.locator("#queue-note")).to_have_text("1 follow-up queued")
        # a worker claims the follow-up (announcing it as started) and finds the first run still working:
        # back to queued, and the page says so again
        follow_up = queued.get_attribute("data-run")
        wait_for(lambda: site.api.ok("GET", f"/api/runs/{follow_up}")["run"]["claims"] >= 1, 20, 0.05,
                 "the follow-up to be claimed and sent back to wait")
        wait_for(lambda: site.api.ok("GET", f"/api/runs/{follow_up}")["run"]["status"] == "queued", 20, 0.05,
                 "the follow-up to wait for the first run")
        expect(queued.locator(".badge")).to_have_text("queued")
        expect(page.locator("#queue-note")).to_have_text("1 follow-up queued")
        expect(page.locator("#run-status")).to_have_text("working…")  # the first run's stream goes on
        expect(page.locator(".message.live")).to_contain_text("I see")  # the stream goes on above it
        page.screenshot(path=str(ARTIFACTS / "follow-up-queued.png"))

        # the lightbox opens from the thumbnail and closes with Escape
        page.locator(".message.user button.thumb-button").click()
        dialog = page.get_by_role("dialog", name="Image")
        expect(dialog).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "lightbox.png"))
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()

        release.set()
        expect(page.locator(".message.assistant").last).to_contain_text("The follow-up answer.")
        expect(queued).to_have_count(0)
        expect(page.locator("#queue-note")).to_be_hidden()
    finally:
        release.set()
    first_request = fake.requests[0]["body"]
    sent = [part for message in first_request["messages"] if message["role"] == "user"
            and isinstance(message["content"], list) for part in message["content"]]
    assert [part["type"] for part in sent] == ["text", "image_url"]
    assert sent[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert fake.requests[1]["body"]["messages"][-1]["content"] in ("and then?", [{"type": "text", "text": "and then?"}])
    messages = site.api.ok("GET", f"/api/sessions/{chat_id}/messages")["messages"]
    assert [part["type"] for part in messages[0]["parts"]] == ["text", "image"]

    # members and roles: an owner adds someone by name, changes the role, removes them
    project_id = site.chat["project_id"]
    site.api.ok("PUT", f"/api/projects/{project_id}/members/{site.alice['id']}", {"role": "owner"})
    with site.db.transaction() as session:
        bob = users.create_user(session, f"bob-{uuid.uuid4().hex[:6]}")
        bob_name = bob.username
    page.goto(site.api.url + f"/#/projects/{project_id}")
    page.get_by_role("link", name="Members and roles").click()
    form = page.get_by_role("form", name="Add a member")
    form.get_by_label("User name").fill("nobody-here")
    form.get_by_role("button", name="Add member").click()
    expect(page.get_by_role("alert")).to_contain_text("there is no user named 'nobody-here'")
    form.get_by_label("User name").fill(bob_name)
    form.get_by_label("Role").select_option("viewer")
    form.get_by_role("button", name="Add member").click()
    role = page.get_by_label(f"Role of {bob_name}")
    expect(role).to_have_value("viewer")

    def roles() -> dict[str, str]:
        return {member["username"]: member["role"]
                for member in site.api.ok("GET", f"/api/projects/{project_id}/members")["members"]}

    assert roles()[bob_name] == "viewer"
    role.select_option("member")
    wait_for(lambda: roles().get(bob_name) == "member", timeout=10, message="the role change")
    page.screenshot(path=str(ARTIFACTS / "members.png"))
    page.get_by_role("button", name=f"Remove {bob_name}").click()
    expect(page.get_by_label(f"Role of {bob_name}")).to_have_count(0)
    assert bob_name not in roles()


def test_a_workflow_launched_watched_resumed_with_cached_agents_and_cancelled(site: Any, fake: FakeModelServer,
                                                                             browser: Any) -> None:
    from playwright.sync_api import expect

    folder = project_root(site) / ".boocode" / "workflows"
    folder.mkdir(parents=True)
    script = ('export const meta = {name: "pair", description: "Look at each topic, then sum up", '
              'phases: ["look", "sum up"]};\n'
              'phase("look");\n'
              'const found = await parallel(args.topics.map((topic) => () => '
              'agent("look at " + topic, {label: topic})));\n'
              'phase("sum up");\n'
              'const summary = await agent("summarise " + found.join(" | "), {label: "summary"});\n'
              'log("done with", args.topics.length, "topics");\n'
              'return {found, summary};\n')
    (folder / "pair.js").write_text(script)
    prompts: list[str] = []
    gate = threading.Event()

    def respond(body: dict) -> Reply:
        prompt = next(message for message in body["messages"] if message["role"] == "user")["content"]
        prompt = prompt if isinstance(prompt, str) else " ".join(part.get("text", "") for part in prompt)
        prompts.append(prompt)
        if prompt == "look at gamma":
            return Reply(text="too slow", hold=gate, usage=openai_usage(10, 1))
        return Reply(text=f"answer to: {prompt}", usage=openai_usage(100, 10))

    fake.responder = respond
    site.start_worker()
    project_id = site.chat["project_id"]
    try:
        page = sign_in(browser, site, site.alice["username"], f"#/projects/{project_id}")
        page.get_by_role("link", name="Workflows").click()
        listed = page.locator("li[data-workflow]")
        expect(listed.filter(has_text="review-code")).to_have_count(1)  # built-in
        pair = page.locator('li[data-workflow="pair"]')
        expect(pair).to_contain_text("Look at each topic, then sum up")
        expect(pair).to_contain_text("Phases: look → sum up")
        expect(pair.locator(".badge")).to_have_text("project")
        pair.get_by_role("button", name="Run pair…").click()
        arguments = pair.get_by_label("Arguments (JSON)")
        arguments.fill('{"topics": ["alpha", ')
        expect(pair.get_by_role("alert")).to_contain_text("not valid JSON")
        page.screenshot(path=str(ARTIFACTS / "workflow-args.png"))
        arguments.fill('{"topics": ["alpha", "beta"]}')
        expect(pair.get_by_role("alert")).to_have_text("")
        pair.get_by_label("Agents at once").fill("2")
        pair.get_by_label("Run in").select_option(site.chat["id"])
        pair.get_by_role("button", name="Check (dry run)").click()
        expect(pair.locator(".dry-run")).to_contain_text("First wave: 2 agents")
        pair.get_by_role("button", name="Run", exact=True).click()

        state = page.locator("#workflow-state")
        expect(state.locator(".badge")).to_have_text("completed", timeout=30000)
        agents = page.locator("[data-agent]")
        expect(agents).to_have_count(3)
        expect(agents.locator(".badge.completed")).to_have_count(3)
        expect(page.get_by_label("phase look").locator("[data-agent]")).to_have_count(2)
        result = page.locator("pre.workflow-result")
        expect(result).to_contain_text("answer to: summarise answer to: look at alpha | answer to: look at beta")
        expect(page.get_by_label("Log")).to_contain_text("done with 2 topics")
        run_id = page.url.rsplit("/", 1)[1]
        status = site.api.ok("GET", f"/api/runs/{run_id}/workflow")
        assert status["run"]["status"] == "completed" and status["cached"] == 0
        expect(state).to_contain_text(f"{status['totals']['tokens']:,} tokens")
        page.screenshot(path=str(ARTIFACTS / "workflow-run.png"), full_page=True)

        # change only the summary, resume: the two looks come from the journal, marked cached
        (folder / "pair.js").write_text(script.replace('"summarise "', '"sum up "'))
        page.get_by_role("button", name="Resume").click()
        expect(state).to_contain_text("pass 2")
        expect(state.locator(".badge")).to_have_text("completed", timeout=30000)
        expect(page.locator("[data-agent] .badge.cached")).to_have_count(2)
        expect(result).to_contain_text("answer to: sum up answer to: look at alpha")
        status = site.api.ok("GET", f"/api/runs/{run_id}/workflow")
        assert status["cached"] == 2 and status["pass"] == 2
        assert sorted(agent["label"] for agent in status["agents"] if agent["cached"]) == ["alpha", "beta"]
        assert prompts.count("look at alpha") == 1 and prompts.count("look at beta") == 1
        page.screenshot(path=str(ARTIFACTS / "workflow-resumed.png"), full_page=True)

        # another run that hangs, cancelled from its page
        page.goto(site.api.url + f"/#/projects/{project_id}/workflows")
        pair = page.locator('li[data-workflow="pair"]')
        pair.get_by_role("button", name="Run pair…").click()
        pair.get_by_label("Arguments (JSON)").fill('{"topics": ["gamma", "delta"]}')
        pair.get_by_label("Agents at once").fill("1")
        pair.get_by_role("button", name="Run", exact=True).click()
        expect(page.locator("[data-agent] .badge.running")).to_have_count(1, timeout=20000)
        expect(page.locator('[data-agent] .badge.queued')).to_have_text(["queued"])  # delta waits for the slot
        expect(state).to_contain_text("1 running, 1 queued")
        page.get_by_role("button", name="Cancel").click()
        expect(state.locator(".badge")).to_have_text("cancelled", timeout=20000)
        expect(page.locator("[data-agent] .badge.cancelled")).to_have_count(2)
        expect(page.get_by_role("button", name="Resume")).to_be_visible()
        assert "look at delta" not in prompts
    finally:
        gate.set()


def test_a_two_thousand_message_session_keeps_a_small_page_and_keyboard_tabs(site: Any, browser: Any) -> None:
    from playwright.sync_api import expect

    chat_id = uuid.UUID(site.chat["id"])
    with site.db.transaction() as session:
        for index in range(2000):
            role = MessageRole.USER if index % 2 == 0 else MessageRole.ASSISTANT
            chat_sessions.add_message(session, chat_id, role,
                                      [{"type": "text", "text": f"message {index}: " + "words " * 30}])
    page = sign_in(browser, site, site.alice["username"])
    started = time.monotonic()
    page.goto(site.api.url + f"/#/sessions/{chat_id}")
    expect(page.locator(".message").last).to_contain_text("message 1999:")
    print(f"2,000-message session shown in {time.monotonic() - started:.2f}s")
    shown = page.locator(".message").count()
    assert 100 <= shown <= 200, shown
    expect(page.locator(".earlier")).to_have_text(f"{2000 - shown} earlier messages — scroll up to see them")
    expect(page.locator(".message").last).to_be_in_viewport()
    # scrolling to the top of what is shown brings the earlier ones in, and keeps the reader's place
    top_seq = page.locator(".message").first.get_attribute("data-seq")
    page.locator(".messages").evaluate("node => node.scrollTop = 0")
    expect(page.locator(".message")).to_have_count(shown + 80)
    expect(page.locator(f'.message[data-seq="{top_seq}"]')).to_be_in_viewport()
    page.screenshot(path=str(ARTIFACTS / "long-session.png"))

    # keyboard: the views are tabs, moved between with the arrow keys
    page.get_by_role("tab", name="Chat").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Trace")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("tab", name="Trace")).to_be_focused()
    expect(page.get_by_role("tabpanel", name="Trace")).to_be_visible()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Cache")).to_be_focused()
    expect(page.get_by_role("tabpanel", name="Chat")).to_be_hidden()
    # the open view survives a reload
    page.reload()
    expect(page.get_by_role("tab", name="Cache")).to_have_attribute("aria-selected", "true")


def test_messages_keep_their_order_when_their_fetches_come_back_out_of_order(site: Any, fake: FakeModelServer,
                                                                            browser: Any) -> None:
    """The page fetches each message as its event arrives; a fast run's answers can come back in any
    order. The browser holds back the response with the tool call until the final answer is shown."""
    from playwright.sync_api import expect

    fake.script(Reply(tool_calls=[("glob", {"pattern": "*.md"})], usage=openai_usage(100, 5)),
                Reply(text="All done.", usage=openai_usage(120, 5)))
    site.start_worker()
    chat_id = site.chat["id"]
    page = sign_in(browser, site, site.alice["username"], f"#/sessions/{chat_id}")
    expect(page.locator("#connection")).to_have_text("live")
    held: list[Any] = []

    def hold_the_tool_call(route: Any) -> None:
        response = route.fetch()
        parts = [part for message in response.json()["messages"] for part in message["parts"]]
        if not held and any(part["type"] == "tool_call" for part in parts):
            held.append((route, response))  # answered below, after the later messages
            return
        route.fulfill(response=response)

    page.route("**/api/sessions/*/messages?after=*", hold_the_tool_call)
    page.get_by_label("Message").fill("what is here?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".message.assistant").last).to_contain_text("All done.")
    assert len(held) == 1
    route, response = held[0]
    route.fulfill(response=response)
    expect(page.locator(".message")).to_have_count(4)  # the question, the call, its result, the answer
    seqs = [int(node.get_attribute("data-seq")) for node in page.locator(".message").all()]
    assert seqs == sorted(seqs), seqs
    expect(page.locator(".message.assistant").last).to_contain_text("All done.")
    expect(page.locator(".message.assistant").first).to_contain_text("glob")
