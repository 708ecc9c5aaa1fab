"""NUL bytes and lone surrogates from the agent side (file contents, tool arguments, model text) are
stored escaped, never fail a run: a real turn through a real worker, read back through the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.store.storable import NUL_ESCAPE, REPLACEMENT, storable
from tests.conftest import new_session
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import WorkerProcess


def test_storable_escapes_nul_and_replaces_lone_surrogates_everywhere() -> None:
    value = {"a\x00": ["x\x00y", {"k": "\ud800z"}], "clean": "ok", "n": 1, "none": None}
    assert storable(value) == {f"a{NUL_ESCAPE}": [f"x{NUL_ESCAPE}y", {"k": f"{REPLACEMENT}z"}], "clean": "ok",
                               "n": 1, "none": None}
    clean = {"a": ["b", {"c": 1}]}
    assert storable(clean) is clean  # nothing copied when nothing needs changing
    assert storable(storable(value)) == storable(value)  # idempotent


@pytest.fixture
def agent(make_stack, fake: FakeModelServer, tmp_path: Path):  # type: ignore[no-untyped-def]
    stack = make_stack(model_base_url=fake.base_url, model_name="gpt-4o-mini", model_api_key="sk-fake",
                       agent_max_steps=6)
    root = tmp_path / "root"
    chat = new_session(stack.api, root)
    worker = WorkerProcess(stack.settings, tmp_path, name="nul@localhost").start()
    yield stack.api, chat, root
    worker.stop()


def test_nul_in_file_content_tool_arguments_and_model_text_is_stored_escaped(agent, fake: FakeModelServer) -> None:  # type: ignore[no-untyped-def]
    api, chat, root = agent
    # read_file refuses a file with a NUL in its first 8 KiB as binary; past that, NULs reach its output
    text_lines = b"".join(b"line %03d of plain text, long enough to pass the binary check\n" % n for n in range(200))
    (root / "binary.dat").write_bytes(text_lines + b"head\x00\x00tail\n")
    fake.script(
        Reply(text="Reading \x00 it.", tool_calls=[("read_file", {"path": "binary.dat", "offset": 201}),
                                                   ("create_file", {"path": "made.txt", "content": "a\x00b\n"}),
                                                   ("grep", {"pattern": "tail\x00", "path": "."})],
              usage=openai_usage(100, 10)),
        Reply(text="Done: head\x00tail \ud800.", usage=openai_usage(200, 5)))
    posted = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "read the binary file"}, expected=202)
    final = api.wait_for_run(posted["run"]["id"], ("completed", "failed"), timeout=90)
    assert final["status"] == "completed", final
    assert final["result"]["text"] == f"Done: head{NUL_ESCAPE}tail {REPLACEMENT}."

    messages = api.ok("GET", f"/api/sessions/{chat['id']}/messages")["messages"]
    assert [message["role"] for message in messages] == ["user", "assistant", "tool", "tool", "tool", "assistant"]
    assistant = messages[1]["parts"]
    assert assistant[0]["text"] == f"Reading {NUL_ESCAPE} it."
    created = [part for part in assistant if part.get("name") == "create_file"][0]
    assert json.loads(created["arguments"])["content"] == "a\x00b\n"  # the model's argument text, as sent
    read_result = messages[2]["parts"][0]
    assert not read_result["is_error"] and f"head{NUL_ESCAPE}{NUL_ESCAPE}tail" in read_result["content"]
    assert (root / "made.txt").read_bytes() == b"a\x00b\n"  # the tool itself got the real bytes
    assert not messages[4]["parts"][0]["is_error"]  # grep with a NUL in its pattern: a result like any other
    assert messages[3]["parts"][1]["diff"].endswith(f"+a{NUL_ESCAPE}b\n")
    assert messages[-1]["parts"][0]["text"] == final["result"]["text"]

    # every other record of the run is readable too, and none holds a raw NUL
    events = api.ok("GET", f"/api/sessions/{chat['id']}/events?limit=500")["events"]
    spans = api.ok("GET", f"/api/runs/{final['id']}/spans")["spans"]
    steps = api.ok("GET", f"/api/runs/{final['id']}/steps")["steps"]
    for records in (messages, events, spans, steps):
        text = json.dumps(records)
        assert "\\u0000" not in text.replace("\\\\u0000", "") and "\\ud800" not in text
    assert any(NUL_ESCAPE in json.dumps(event["data"], ensure_ascii=False) for event in events
               if event["type"] == "text.delta")
    assert any(span["kind"] == "tool_call" and span["status"] == "ok" for span in spans)
