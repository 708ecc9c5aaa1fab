"""What a run keeps from one turn to the next while its task goes on (ADR 0006): the conversation read at
its first turn (later turns read only the run's own new messages) and the digests of prompt blobs known
to be stored (later turns look up only new segments). Neither may change what the model is sent or what
the trace stores.

The same two runs (a first one, then a follow-up whose history includes the first's messages) go
through a real worker twice: once with every turn in a task of its own (BOOCODE_TURN_SLICE_SECONDS=0:
every turn reads everything afresh) and once with each run's turns in one task. The model must receive
the same messages at every call, every prompt segment of every model call span must be stored, and
each call's cache diagnosis (made against the previous call's segments, which a task keeps) must agree.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select

from orchestrator.domain.enums import MessageRole
from orchestrator.store import projects, runs, sessions, spans, users
from orchestrator.store.models import Blob, Run
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import RunStatusWatcher, WorkerProcess, wait_for
from web.queue import TaskQueue

TOOL_TURNS = 3


def replies() -> list[Reply]:
    return [Reply(tool_calls=[("glob", {"pattern": f"*{index}.md"})], usage=openai_usage(50, 5))
            for index in range(TOOL_TURNS)] + [Reply(text="done", usage=openai_usage(50, 1))]


def normalised(requests: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Each call's messages, the fake's random tool call ids replaced by their order of appearance."""
    names: dict[str, str] = {}

    def name(identifier: str) -> str:
        return names.setdefault(identifier, f"call-{len(names)}")

    calls = []
    for request in requests:
        messages = []
        for message in request["body"]["messages"]:
            message = dict(message)
            if "tool_call_id" in message:
                message["tool_call_id"] = name(message["tool_call_id"])
            if message.get("tool_calls"):
                message["tool_calls"] = [{**call, "id": name(call["id"])} for call in message["tool_calls"]]
            messages.append(message)
        calls.append(messages)
    return calls


def two_runs(stack, fake: FakeModelServer, root: Path, tmp_path: Path, slice_name: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A run, then a follow-up in the same session, each to completion; what the model was sent and stored."""
    with stack.db.transaction() as session:
        owner = users.create_user(session, "owner")  # the same names in both stacks: the prompts name them
        project = projects.create_project(session, "p", str(root), owner)
        chat_id = sessions.create_session(session, project.id, "s", owner.id).id
    worker = WorkerProcess(stack.settings, tmp_path, name=f"memory-{slice_name}@localhost", concurrency=1).start()
    run_ids: list[uuid.UUID] = []
    before = len(fake.requests)
    try:
        for prompt in ("look around", "and again"):
            fake.script(*replies())
            with stack.db.transaction() as session:
                run = runs.create_run(session, project_id=project.id, session_id=chat_id, kind="agent", input={},
                                      created_by=owner.id)
                sessions.add_message(session, chat_id, MessageRole.USER, [{"type": "text", "text": prompt}],
                                     run_id=run.id)
            run_ids.append(run.id)
            TaskQueue(stack.settings).enqueue_run("agent", run.id)
            with RunStatusWatcher(stack.settings.database_url, run.id) as watcher:
                wait_for(lambda: watcher.status() == "completed", 60, 0.2, f"run {prompt!r} to complete")
    finally:
        worker.stop()
    sent = fake.requests[before:]
    with stack.db.transaction() as session:
        claims = [session.scalar(select(Run.claims).where(Run.id == run_id)) for run_id in run_ids]
        calls = spans.list_spans(session, session_id=chat_id, kind="model_call", limit=200)
        segments = [segment["blob"] for span in calls for segment in span.attributes["prompt_segments"]]
        # each call's cache diagnosis against the session's previous call (what does not depend on timing)
        diagnoses = [{key: span.attributes["cache"][key] for key in ("cause", "first_changed_segment",
                                                                      "shared_segments", "expected_cached_tokens")}
                     for span in calls]
        stored = set(session.scalars(select(Blob.sha256).where(Blob.sha256.in_(segments))))
    return {"sent": normalised(sent), "claims": claims, "segments": segments, "stored": stored,
            "diagnoses": diagnoses}


def test_turns_in_one_task_send_and_store_what_separate_tasks_do(make_stack, fake: FakeModelServer,  # type: ignore[no-untyped-def]
                                                                 tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "README.md").write_text("# demo\n")
    seen = {}
    for slice_name, seconds in (("apart", 0.0), ("together", 60.0)):
        stack = make_stack(model_base_url=fake.base_url, model_name="gpt-4o-mini", agent_max_steps=10,
                           turn_slice_seconds=seconds, lease_seconds=120.0)
        (tmp_path / slice_name).mkdir()
        seen[slice_name] = two_runs(stack, fake, root, tmp_path / slice_name, slice_name)

    apart, together = seen["apart"], seen["together"]
    # the paths differ as intended: a task per turn, against each run's turns in one task
    assert apart["claims"] == [TOOL_TURNS + 1] * 2, apart["claims"]
    assert together["claims"] == [1, 1], together["claims"]
    assert len(together["sent"]) == 2 * (TOOL_TURNS + 1)
    assert together["sent"] == apart["sent"]
    # the follow-up's calls carry the first run's conversation and each earlier turn of its own
    last = together["sent"][-1]
    assert [message["role"] for message in last] == ["system", "user", *["assistant", "tool"] * TOOL_TURNS,
                                                     "assistant", "user", *["assistant", "tool"] * TOOL_TURNS]
    for figures in (apart, together):
        assert figures["segments"] and set(figures["segments"]) == figures["stored"]
    # a task's later calls compare with the previous call's segments it kept, not read back: the same diagnosis
    assert together["diagnoses"] == apart["diagnoses"]
    assert len(apart["diagnoses"]) == 2 * (TOOL_TURNS + 1)
    assert all(diagnosis["shared_segments"] >= 2 for diagnosis in apart["diagnoses"][1:]), apart["diagnoses"]
