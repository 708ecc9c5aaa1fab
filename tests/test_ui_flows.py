"""Flows in the web UI, in Debian's Chromium against a live server, a real worker and the fake model:
a run's page draws the DAG (states, edges, the switch's taken and excluded branches) and follows the
run live to its Markdown output, then reruns it from a step; the flow list shows the catalog, the
project's flows and its refused files, and starts a run with JSON input; a run in a project the user
is not a member of shows "Not found", not its data."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tests.browser_support import ARTIFACTS, sign_in
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import first_user_text

BRANCHY = """\
name: branchy
description: double n, route by size, ask an agent, fold it into a report
input: {type: object, required: [n], properties: {n: {type: integer}}}
steps:
  - {id: double, kind: code, code: "input.n * 2"}
  - id: route
    kind: switch
    deps: [double]
    cases:
      - {when: "steps.double.result > 10", then: [big]}
    default: [small]
  - {id: big, kind: code, code: "'big'"}
  - {id: small, kind: agent, prompt: "small {{ steps.double.result }}"}
  - {id: join, kind: code, deps: [big, small], code: "steps.small.result.toUpperCase()"}
output: |
  # Report for {{ input.n }}
  The agent said **{{ steps.join.result }}**.
"""

QUICK = """\
name: quick
description: two code steps
input: {type: object, required: [n], properties: {n: {type: integer, description: "a number"}}}
example: {n: 1}
steps:
  - {id: add, kind: code, code: "input.n + 1"}
  - {id: square, kind: code, deps: [add], code: "steps.add.result * steps.add.result"}
output: square
"""

BROKEN = """\
name: broken
steps:
  - {id: a, kind: code, code: "1", deps: [nowhere]}
"""

GREEN, BLUE = "rgb(30, 125, 50)", "rgb(43, 99, 217)"


def write_flow(root: Path, file_name: str, body: str) -> None:
    folder = root / ".boocode" / "flows"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / file_name).write_text(body)


def project_root(site: Any) -> Path:
    return Path(site.api.ok("GET", f"/api/projects/{site.chat['project_id']}")["project"]["root_path"])


def test_a_flow_run_page_draws_the_dag_follows_it_live_to_its_markdown_output_and_reruns(
        site: Any, fake: FakeModelServer, browser: Any) -> None:
    from playwright.sync_api import expect

    write_flow(project_root(site), "branchy.yaml", BRANCHY)
    gate = threading.Event()
    prompts: list[str] = []

    def respond(body: dict) -> Reply:
        prompts.append(first_user_text(body))
        return Reply(text="six <em>it</em> is", hold=gate, usage=openai_usage(200, 20))

    fake.responder = respond
    site.start_worker()
    started = site.api.ok("POST", f"/api/projects/{site.chat['project_id']}/flows/branchy/runs", {"input": {"n": 3}},
                          expected=202)
    run_id = started["run"]["id"]
    try:
        page = sign_in(browser, site, site.alice["username"], f"#/flow-runs/{run_id}")
        node = lambda step: page.locator(f'[data-step="{step}"]')  # noqa: E731
        expect(node("small")).to_have_attribute("data-state", "running", timeout=30000)
        page.evaluate("window.samePage = true")  # gone if anything reloads the page
        expect(page.locator("#flow-state .badge")).to_have_text("running")
        for step, state in [("double", "completed"), ("route", "completed"), ("big", "excluded"), ("join", "pending")]:
            expect(node(step)).to_have_attribute("data-state", state)
        # the page redraws on every event: CSS is asked of the live node each time (expect retries)
        expect(node("double")).to_have_css("border-top-color", GREEN)
        expect(node("small")).to_have_css("border-top-color", BLUE)
        expect(node("small")).to_have_css("animation-name", "flow-pulse")
        expect(node("big")).to_have_css("border-top-style", "dashed")
        edges = page.locator("path.flow-edge")
        expect(edges).to_have_count(5)
        edge = lambda a, b: page.locator(f'path.flow-edge[data-from="{a}"][data-to="{b}"]')  # noqa: E731
        expect(edge("route", "small")).to_have_class("flow-edge branch taken")
        expect(edge("route", "big")).to_have_class("flow-edge branch excluded")
        expect(edge("double", "route")).to_have_class("flow-edge")
        expect(edge("route", "big")).to_have_css("stroke-dasharray", "6px, 5px")
        expect(edge("route", "small")).to_have_css("stroke-dasharray", "none")
        # layers by longest path: double above route above the branches above the join
        tops = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll("[data-step]")]
            .map((node) => [node.dataset.step, node.getBoundingClientRect().top]))""")  # one read of one drawing
        assert tops["double"] < tops["route"] < tops["big"] == tops["small"] < tops["join"]
        expect(page.get_by_role("button", name="Cancel")).to_be_visible()
        expect(page.get_by_role("button", name="Rerun from step")).to_be_hidden()
        page.screenshot(path=str(ARTIFACTS / "flow-run-live.png"), full_page=True)

        gate.set()
        expect(page.locator("#flow-state .badge")).to_have_text("completed", timeout=30000)
        expect(node("small")).to_have_attribute("data-state", "completed")
        expect(node("join")).to_have_attribute("data-state", "completed")
        expect(node("small")).to_have_css("border-top-color", GREEN)
        expect(node("small")).to_have_css("animation-name", "none")
        expect(node("small").locator('[data-field="tokens"]')).to_have_text("220 tok")
        output = page.get_by_label("Output")
        expect(output.locator("h1")).to_have_text("Report for 3")
        expect(output.locator("strong")).to_have_text("SIX <EM>IT</EM> IS")  # a model's HTML stays text
        expect(output.locator("em")).to_have_count(0)
        assert page.evaluate("window.samePage") is True
        expect(page.locator("#connection")).to_have_text("")  # the socket closed with the run
        status = site.api.ok("GET", f"/api/flow-runs/{run_id}")
        expect(page.locator("#flow-state")).to_contain_text(f"{status['totals']['tokens']:,} tokens")

        # a node's detail: the switch says what it took; the agent step links to its run's trace
        node("route").click()
        expect(page.get_by_label("Step route")).to_contain_text("Took small (the default); excluded big")
        node("small").click()
        detail = page.get_by_label("Step small")
        expect(detail.locator("pre")).to_have_text("six <em>it</em> is")
        expect(detail.get_by_role("link", name="Trace of its agent run")).to_have_attribute(
            "href", f"#/sessions/{started['session']['id']}/trace")
        page.screenshot(path=str(ARTIFACTS / "flow-run-done.png"), full_page=True)

        # rerun from the join: followed live again; the agent's answer is kept, not asked again
        node("join").click()
        expect(page.get_by_label("Rerun from step", exact=True)).to_have_value("join")
        page.get_by_role("button", name="Rerun from step").click()
        expect(node("join").locator('[data-field="attempt"]')).to_have_text(" · attempt 2", timeout=30000)
        expect(page.locator("#flow-state .badge")).to_have_text("completed")
        assert prompts == ["small 6"]
        assert page.evaluate("window.samePage") is True
    finally:
        gate.set()


def test_the_flow_list_starts_a_run_with_json_input_and_another_projects_run_stays_hidden(
        site: Any, browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    root = project_root(site)
    write_flow(root, "quick.yaml", QUICK)
    write_flow(root, "broken.yaml", BROKEN)
    elsewhere = tmp_path / "elsewhere"
    write_flow(elsewhere, "quick.yaml", QUICK.replace("name: quick", "name: secret-quick"))
    secret = site.api.ok("POST", "/api/projects", {"name": "secret", "root_path": str(elsewhere)},
                         expected=201)["project"]
    hidden = site.api.ok("POST", f"/api/projects/{secret['id']}/flows/secret-quick/runs", {"input": {"n": 2}},
                         expected=202)["run"]["id"]
    site.start_worker()

    page = sign_in(browser, site, site.alice["username"], f"#/projects/{site.chat['project_id']}")
    page.get_by_role("link", name="Flows", exact=True).click()
    for name in ("review-diff", "triage-failing-test", "release-notes"):
        expect(page.locator(f'li[data-flow="{name}"] h2 .badge')).to_have_text("builtin")
    quick = page.locator('li[data-flow="quick"]')
    expect(quick.locator(".badge")).to_have_text("project")
    expect(quick).to_contain_text("2 steps: add (code), square (code)")
    refused = page.get_by_label("Refused files")
    expect(refused.locator('[data-path=".boocode/flows/broken.yaml"]')).to_contain_text("nowhere")
    expect(refused).to_contain_text("line ")

    quick.get_by_role("button", name="Start quick…").click()
    expect(quick.locator('[data-arg="n"]')).to_contain_text("n (integer, required) — a number")
    box = quick.get_by_label("Input (JSON)")
    expect(box).to_have_value('{\n  "n": 1\n}')  # the flow's example
    box.fill('{"n": ')
    expect(quick.get_by_role("alert")).to_contain_text("not valid JSON")
    box.fill('{"n": "four"}')
    quick.get_by_role("button", name="Start", exact=True).click()
    expect(quick.get_by_role("alert")).to_contain_text("input/n")  # the server's 422, with the path
    box.fill('{"n": 4}')
    quick.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator("#flow-state .badge")).to_have_text("completed", timeout=30000)
    expect(page.locator('[data-step="square"]')).to_have_attribute("data-state", "completed")
    expect(page.get_by_label("Output").locator("pre")).to_have_text("25")
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    run_id = page.url.rsplit("/", 1)[1]
    page.goto(site.api.url + f"/#/projects/{site.chat['project_id']}/flows")
    expect(page.locator(f'a[href="#/flow-runs/{run_id}"]')).to_have_text("quick")

    # a run of a project alice is not in: the page says so and shows none of it
    site.api.wait_for_run(hidden, ("completed",))
    page.goto(site.api.url + f"/#/flow-runs/{hidden}")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.locator("[data-step]")).to_have_count(0)
    expect(page.locator("#view")).not_to_contain_text("secret")
