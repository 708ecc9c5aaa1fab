"""What a new user meets in the first hour of the web UI (issue 17, "The views"), in Debian's Chromium
against a live server, a real worker and the fake model: a project added by an admin, a session named
by its first message and renamed, Approve and Deny side by side, a failed command that says why,
sanitised Markdown, a timeline that ticks and shows its last entry, turns counted from 1 in every
view, a trace row that opens anywhere, a cache view honest about a provider that reports nothing, a
subagent's notice as a system event, the favicon, and the workflow run page's badges, counts,
failures and script error line."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from orchestrator.store import users
from tests.browser_support import ARTIFACTS, PASSWORD, sign_in
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage

MARKDOWN = ("The check failed **because** the widget is broken.\n\n- exit code `3`\n- see [the docs](https://example.com/docs)\n\n"
            "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">\n\n```\nsh -c exit 3\n```\n")
FAILING = ["sh", "-c", "echo 'boom: the widget is broken' >&2; exit 3"]


def silent_usage(prompt: int, completion: int) -> dict[str, int]:
    """A usage block with no cache field at all, as llama.cpp's server sends."""
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def last_user_text(body: dict) -> str:
    content = [message for message in body["messages"] if message["role"] == "user"][-1]["content"]
    return content if isinstance(content, str) else " ".join(part.get("text", "") for part in content)


def test_the_first_hour_in_a_session(site: Any, fake: FakeModelServer, browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    release = threading.Event()

    def respond(body: dict) -> Reply:
        tools = {tool["function"]["name"] for tool in body.get("tools") or []}
        said, last = last_user_text(body), body["messages"][-1]["role"]
        if "spawn_subagent" not in tools:  # the subagent
            return Reply(text="main.py has 1 line.", usage=silent_usage(40, 5))
        if "[background subagent" in said:
            return Reply(text="The helper says main.py has 1 line.", usage=silent_usage(90, 8))
        if said.startswith("Start a helper"):
            if last == "user":
                return Reply(tool_calls=[("spawn_subagent", {"prompt": "count the lines of main.py and report",
                                                             "label": "line-counter"})], usage=silent_usage(70, 6))
            return Reply(text="Started a helper.", usage=silent_usage(80, 4))
        if last == "user":
            return Reply(tool_calls=[("run_command", {"argv": FAILING})], usage=silent_usage(100, 10))
        return Reply(text=MARKDOWN, chunk_size=4, chunk_delay=0.05, hold=release, hold_after=4,
                     usage=silent_usage(150, 30))

    fake.responder = respond
    site.start_worker()
    with site.db.transaction() as session:
        users.set_password(session, users.find_user_by_name(session, "admin").id, PASSWORD)
    root = tmp_path / "hour"
    root.mkdir()
    (root / "main.py").write_text("print('hello')\n")
    try:
        page = sign_in(browser, site, "admin", viewport=(1280, 800))
        missing: list[str] = []
        problems: list[str] = []  # script errors, and CSP violations (Chromium logs them as console errors)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda message: message.type == "error" and problems.append(message.text))
        page.on("response", lambda response: response.status == 404 and missing.append(response.url))

        # an admin adds a project from the projects page
        form = page.get_by_role("form", name="Add a project")
        form.get_by_label("Name").fill("first-hour")
        form.get_by_label("Root path").fill(str(root))
        form.get_by_role("button", name="Add project").click()
        expect(page.get_by_role("heading", name="first-hour")).to_be_visible()
        page.get_by_role("button", name="New session").click()
        expect(page.locator("#session-title")).to_have_text("New session")
        expect(page.locator("#connection")).to_have_text("live")
        session_id = page.url.rsplit("/", 1)[1]
        icon = page.locator('link[rel="icon"]').get_attribute("href")
        assert site.api.request("GET", icon).status_code == 200

        page.get_by_label("Message").fill("Run the failing check, then explain why it fails")
        page.get_by_role("button", name="Send").click()
        # the session is named from its first message
        expect(page.locator("#session-title")).to_have_text("Run the failing check, then explain why it fails")
        expect(page.locator("#crumbs")).to_contain_text("Run the failing check")

        # Approve and Deny: the same width, side by side
        card = page.get_by_role("group", name="approval for run_command")
        approve, deny = card.get_by_role("button", name="Approve"), card.get_by_role("button", name="Deny")
        expect(approve).to_be_visible()
        a, d = approve.bounding_box(), deny.bounding_box()
        assert abs(a["width"] - d["width"]) < 1 and abs(a["y"] - d["y"]) < 1 and d["x"] > a["x"] + a["width"], (a, d)
        page.screenshot(path=str(ARTIFACTS / "first-hour-approval.png"))
        approve.click()

        # a failed command says why in its collapsed row
        failed = page.locator("details.result.failed", has_text="run_command")
        expect(failed.locator("summary .why")).to_have_text("exit code 3: boom: the widget is broken")

        # while the answer streams, the running timeline entry ticks
        expect(page.locator(".message.live")).to_be_visible()
        running = page.locator("nav.timeline button.turn.running")
        expect(running).to_have_count(1)
        expect(running.locator('[data-field="tokens"]')).to_have_text("… tokens")
        before = running.locator('[data-field="duration"]').inner_text()
        page.wait_for_timeout(1200)
        assert running.locator('[data-field="duration"]').inner_text() != before
        release.set()

        # Markdown, rendered and sanitised
        answer = page.locator(".message.assistant .markdown").last
        expect(answer.locator("strong")).to_have_text("because")
        expect(answer.locator("li")).to_have_count(2)
        expect(answer.locator("code").first).to_have_text("3")
        expect(answer.locator("pre code")).to_contain_text("sh -c exit 3")
        expect(answer.locator("a")).to_have_attribute("rel", "noopener noreferrer")
        assert answer.locator("script, img").count() == 0
        expect(answer).to_contain_text("<script>window.pwned = 1</script>")  # raw HTML is shown as text
        assert page.evaluate("window.pwned") is None
        page.screenshot(path=str(ARTIFACTS / "first-hour-markdown.png"))

        # renamed in place
        page.get_by_role("button", name="Rename the session").click()
        page.get_by_label("Session title").fill("Widget check")
        page.get_by_label("Session title").press("Enter")
        expect(page.locator("#session-title")).to_have_text("Widget check")
        assert site.api.ok("GET", f"/api/sessions/{session_id}")["session"]["title"] == "Widget check"

        # a subagent's notice is a system event with its label and prompt; the pane shows the prompt
        page.get_by_label("Message").fill("Start a helper to count lines")
        page.get_by_role("button", name="Send").click()
        notice = page.locator(".message.system.subagent-notice")
        expect(notice).to_contain_text("Subagent line-counter finished", timeout=30000)
        expect(notice.locator('[data-field="prompt"]')).to_have_text("Prompt: count the lines of main.py and report")
        expect(page.locator(".message.user", has_text="[background subagent")).to_have_count(0)
        pane = page.get_by_role("complementary", name="Background subagents")
        expect(pane.locator('[data-field="prompt"]')).to_have_text("count the lines of main.py and report")
        expect(page.locator(".message.assistant").last).to_contain_text("The helper says main.py has 1 line.")
        page.screenshot(path=str(ARTIFACTS / "first-hour-subagent-notice.png"))

        # turns from 1 everywhere: timeline, trace, cache
        turns = page.locator("nav.timeline button.turn")
        expect(turns.first).to_contain_text("Run 1 · turn 1")
        expect(turns.nth(1)).to_contain_text("Run 1 · turn 2")
        page.get_by_role("tab", name="Trace").click()
        tree = page.get_by_role("tree", name="Spans")
        expect(tree.locator('.span-row[data-kind="turn"]').first.locator(".span-name")).to_have_text("turn 1")
        expect(tree.locator('.span-row[data-kind="run"]').first.locator(".span-name")).to_have_text("run 1 · agent")
        assert "turn 0" not in tree.inner_text()
        # the whole row opens a span; usage and cost are fields
        model_row = tree.locator('.span-row[data-kind="model_call"]').first
        expect(model_row.locator('[data-field="tokens"]')).to_have_text("100 in · cache not reported · 10 out")
        model_row.locator('[data-field="duration"]').click()
        details = page.locator(".span-details")
        expect(details).to_have_count(1)
        usage = details.get_by_label("usage")
        expect(usage.locator('[data-field="input_total"]')).to_have_text("100")
        expect(usage.locator('[data-field="output"]')).to_have_text("10")
        expect(usage.locator('[data-field="cache_read"]')).to_have_text("not reported by this provider")
        expect(details.locator('[data-name="cost"]')).to_be_visible()
        assert "{" not in details.locator('[data-name="usage"]').inner_text()
        page.screenshot(path=str(ARTIFACTS / "first-hour-trace.png"), full_page=True)
        model_row.locator('[data-field="tokens"]').click()
        expect(details).to_have_count(0)

        page.get_by_role("tab", name="Cache").click()
        rows = page.locator(".cache-row")
        calls = [span for span in
                 site.api.ok("GET", f"/api/sessions/{session_id}/spans?kind=model_call&limit=200")["spans"]]
        expect(rows).to_have_count(len(calls))
        assert all(span["attributes"]["cache"]["status"] == "unreported" or
                   "cache_not_reported" in span["attributes"]["usage"]["flags"] for span in calls)
        for row in rows.all():
            badge = row.locator('[data-field="hit_rate"]')
            expect(badge).to_have_text("not reported")
            expect(badge).to_have_class("badge hit hit-unreported")
            expect(row.locator('[data-field="cause"]')).to_contain_text("not reported by this provider")
            assert "0%" not in row.inner_text()
        assert page.locator(".badge.hit-poor").count() == 0
        expect(rows.first.locator(".call-name")).to_have_text(f"run 1 · turn 1 · {calls[0]['name']}")
        page.screenshot(path=str(ARTIFACTS / "first-hour-cache.png"), full_page=True)

        # the timeline pane shows its last entry in full, even in a short window
        page.get_by_role("tab", name="Chat").click()
        page.set_viewport_size({"width": 1280, "height": 360})
        listing = page.locator(".timeline-list")
        listing.evaluate("node => node.scrollTop = node.scrollHeight")
        page.wait_for_timeout(100)
        box, last = listing.bounding_box(), turns.last.bounding_box()
        assert turns.count() >= 5
        assert last["y"] + last["height"] <= box["y"] + box["height"] + 0.5 <= 360.5, (last, box)
        page.screenshot(path=str(ARTIFACTS / "first-hour-timeline-short.png"))
        assert missing == [], missing
        assert problems == [], problems
    finally:
        release.set()


WORKFLOW = '''export const meta = {name: "probe-two", description: "One look, then two more side by side",
  phases: ["look", "pair"], args: {type: "object", properties: {topic: {type: "string", description: "what to look at"},
  crash: {type: "boolean"}}, required: ["topic"]}, example: {topic: "the widget"}};
phase("look");
const first = await agent("look at " + args.topic, {label: "first"});
if (args.crash) throw new Error("asked to crash");
phase("pair");
const both = await parallel([() => agent("fail please", {label: "bad"}), () => agent("fine", {label: "good"})]);
return {first, both};
'''


def test_the_workflow_run_page_says_what_happens(site: Any, fake: FakeModelServer, browser: Any) -> None:
    from playwright.sync_api import expect

    root = Path(site.api.ok("GET", f"/api/projects/{site.chat['project_id']}")["project"]["root_path"])
    (root / ".boocode" / "workflows").mkdir(parents=True)
    (root / ".boocode" / "workflows" / "probe-two.js").write_text(WORKFLOW)
    gate = threading.Event()

    def respond(body: dict) -> Reply:
        prompt = last_user_text(body)
        if prompt == "fail please":
            return Reply(status=400, error_message="the model refused this agent")
        if prompt == "look at slow":
            return Reply(text="slowly looked", hold=gate, usage=openai_usage(10, 1))
        return Reply(text=f"answer to: {prompt}", usage=openai_usage(20, 2))

    fake.responder = respond
    site.start_worker()
    project_id = site.chat["project_id"]
    try:
        page = sign_in(browser, site, site.alice["username"], f"#/projects/{project_id}/workflows",
                       viewport=(1200, 900))
        item = page.locator('li[data-workflow="probe-two"]')
        item.get_by_role("button", name="Run probe-two…").click()
        hint = item.locator(".args-hint")
        expect(hint).to_be_visible()
        listed = next(entry for entry in site.api.ok("GET", f"/api/projects/{project_id}/workflows")["workflows"]
                      if entry["name"] == "probe-two")
        if "args" in listed or "args" in (listed.get("meta") or {}):  # shown when the API gives it
            expect(hint.locator('[data-arg="topic"]')).to_contain_text("what to look at")
            expect(item.get_by_label("Arguments (JSON)")).to_have_value('{\n  "topic": "the widget"\n}')
        else:
            expect(hint).to_contain_text("declares no arguments")
        page.screenshot(path=str(ARTIFACTS / "first-hour-workflow-form.png"))
        item.get_by_label("Arguments (JSON)").fill('{"topic": "slow", "crash": true}')
        item.get_by_label("Run in").select_option(site.chat["id"])
        item.get_by_role("button", name="Run", exact=True).click()

        # while its one agent works the run is running, not queued; one agent is "1 agent"
        state = page.locator("#workflow-state")
        expect(page.locator('[data-agent] .badge.running')).to_have_count(1, timeout=20000)
        expect(state.locator(".badge")).to_have_text("running")
        expect(state).to_contain_text("1 agent (1 running)")
        page.screenshot(path=str(ARTIFACTS / "first-hour-workflow-running.png"))
        gate.set()
        # the script's error names its line
        expect(state.locator(".badge")).to_have_text("failed", timeout=30000)
        run_id = page.url.rsplit("/", 1)[1]
        error = site.api.ok("GET", f"/api/runs/{run_id}/workflow")["error"]
        assert error["line"], error
        expect(page.locator("#workflow-error")).to_contain_text(f"at line {error['line']}")
        expect(page.locator("#workflow-error")).to_contain_text("asked to crash")

        # completed with failures: a readable, full-size badge and each failure once
        page.goto(site.api.url + f"/#/projects/{project_id}/workflows")
        item = page.locator('li[data-workflow="probe-two"]')
        item.get_by_role("button", name="Run probe-two…").click()
        item.get_by_label("Arguments (JSON)").fill('{"topic": "x"}')
        item.get_by_label("Run in").select_option(site.chat["id"])
        item.get_by_role("button", name="Run", exact=True).click()
        badge = page.locator("#workflow-state .badge")
        expect(badge).to_have_text("completed with failures", timeout=40000)
        assert float(badge.evaluate("node => parseFloat(getComputedStyle(node).fontSize)")) >= 14
        failures = page.get_by_label("Failures").locator("li")
        run_id = page.url.rsplit("/", 1)[1]
        report = site.api.ok("GET", f"/api/runs/{run_id}/workflow")
        reasons = [failure["reason"] for failure in report["failures"]]
        expect(failures).to_have_count(len(set(reasons)))
        expect(failures.first).to_contain_text("bad")
        page.screenshot(path=str(ARTIFACTS / "first-hour-workflow-failures.png"), full_page=True)
    finally:
        gate.set()
