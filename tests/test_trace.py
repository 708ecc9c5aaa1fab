"""Traces of a real agent run: span tree, usage and cost, cache diagnosis, keyset pages, filters, CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.store import blobs
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import events_of


def all_spans(api, path: str, **filters) -> list[dict]:  # type: ignore[no-untyped-def]
    found, cursor = [], 0
    while True:
        query = "&".join(f"{key}={value}" for key, value in {"cursor": cursor, "limit": 2, **filters}.items())
        page = api.ok("GET", f"{path}?{query}")
        found.extend(page["spans"])
        if page["next_cursor"] is None:
            return found
        assert page["next_cursor"] > cursor
        cursor = page["next_cursor"]


def test_a_run_leaves_a_complete_trace(agent, fake: FakeModelServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack, api, chat, root, start_worker = agent
    fake.script(
        Reply(tool_calls=[("read_file", {"path": "README.md"})], usage=openai_usage(1000, 10)),
        Reply(tool_calls=[("list_dir", {})], usage=openai_usage(1100, 10, cached=1000)),
        Reply(text="All done.", usage=openai_usage(1200, 5, cached=0)))
    start_worker()
    run = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "look around"})["run"]
    api.wait_for_run(run["id"], timeout=60)

    spans = all_spans(api, f"/api/runs/{run['id']}/spans")
    assert [span["position"] for span in spans] == sorted({span["position"] for span in spans})
    by_kind: dict[str, list[dict]] = {}
    for span in spans:
        by_kind.setdefault(span["kind"], []).append(span)
    assert {kind: len(found) for kind, found in by_kind.items()} == {"run": 1, "turn": 3, "model_call": 3,
                                                                     "tool_call": 2}
    assert all(span["status"] == "ok" and span["ended_at"] and span["duration_ms"] is not None for span in spans)
    [run_span] = by_kind["run"]
    turn_ids = {span["turn"]: span["id"] for span in by_kind["turn"]}
    assert all(span["parent_id"] == run_span["id"] for span in by_kind["turn"])
    assert all(span["parent_id"] == turn_ids[span["turn"]] for span in by_kind["model_call"] + by_kind["tool_call"])
    assert [span["name"] for span in by_kind["tool_call"]] == ["read_file", "list_dir"]
    assert json.loads(by_kind["tool_call"][0]["attributes"]["arguments"]["inline"]) == {"path": "README.md"}

    calls = by_kind["model_call"]
    assert [call["attributes"]["usage"]["cache_read"] for call in calls] == [0, 1000, 0]
    assert [call["attributes"]["cache"]["status"] for call in calls] == ["cold", "hit", "miss"]
    assert calls[0]["attributes"]["cache"]["cause"] == "cold_start"
    assert calls[2]["attributes"]["cache"]["cause"] == "provider_miss"  # unchanged prefix, provider reused nothing
    segments = calls[1]["attributes"]["prompt_segments"]
    assert [segment["name"] for segment in segments[:3]] == ["model", "tools", "system"]
    assert calls[0]["attributes"]["prompt_segments"] == segments[: len(calls[0]["attributes"]["prompt_segments"])]
    assert calls[0]["attributes"]["time_to_first_token_ms"] is not None
    with stack.db.transaction() as session:  # each segment's blob holds exactly the bytes its hash was taken of
        stored = {segment["blob"]: blobs.load_blob(session, segment["blob"]).data for segment in segments}
    assert all(hashlib.sha256(stored[segment["blob"]]).hexdigest() == segment["blob"] and
               segment["blob"][:16] == segment["hash"] for segment in segments)
    assert json.loads(stored[segments[0]["blob"]]) == {"model": calls[1]["name"]}
    assert [json.loads(stored[segment["blob"]])["role"] for segment in segments[2:4]] == ["system", "user"]
    # the events announce each model call's span without its (growing) prompt segments; the rest is there
    announced = [event["data"] for event in events_of(api, chat["id"])
                 if event["type"] in ("span.started", "span.finished") and event["data"]["kind"] == "model_call"]
    assert len(announced) == 6 and not any("prompt_segments" in span["attributes"] for span in announced)
    assert [span["attributes"]["cache"]["status"] for span in announced if span["ended_at"]] == ["cold", "hit", "miss"]

    assert [span["name"] for span in all_spans(api, f"/api/runs/{run['id']}/spans", tool="list_dir")] == ["list_dir"]
    assert [span["kind"] for span in all_spans(api, f"/api/runs/{run['id']}/spans", turn=1)] == [
        "turn", "model_call", "tool_call"]
    assert all_spans(api, f"/api/sessions/{chat['id']}/spans", status="error") == []

    summary = api.ok("GET", f"/api/runs/{run['id']}/trace-summary")["summary"]
    assert (summary["model_calls"], summary["tool_calls"], summary["errors"]) == (3, 2, 0)
    assert summary["tokens"]["input_total"] == 3300 and summary["tokens"]["cache_read"] == 1000
    assert summary["cache_hit_rate"] == round(1000 / 3300, 4)
    assert summary["cost"]["total"] == pytest.approx(sum(call["attributes"]["cost"]["total"] for call in calls))
    assert summary["cost"]["saved"] > 0
    assert api.ok("GET", f"/api/sessions/{chat['id']}/trace-summary")["summary"]["model_calls"] == 3

    printed = subprocess.run([str(Path(sys.executable).parent / "boocode"), "trace", run["id"]], capture_output=True,
                             text=True, timeout=60, env={"BOOCODE_URL": api.url, "BOOCODE_TOKEN": api.token,
                                                         "BOOCODE_DATA_DIR": str(tmp_path / "cli"), "PATH": "/usr/bin"})
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert lines[0].startswith("run ") and lines[1].startswith("  turn ") and lines[2].startswith("    model_call")
    assert "cache cold (first call of the session" in printed.stdout and "read_file" in printed.stdout
    assert "3 model calls, 2 tool calls, 0 errors" in printed.stdout and "cache hit rate 30%" in printed.stdout
