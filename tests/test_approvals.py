"""Approval policy: rules decide allow / ask / deny; `ask` parks the run until a person decides."""

from __future__ import annotations

import pytest

from orchestrator.errors import ValidationError
from orchestrator.tools.policy import decide, validate_policy
from orchestrator.tools.registry import TOOLS
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import events_of, messages_of


def test_rules_in_order_then_the_defaults() -> None:
    policy = validate_policy({"rules": [{"tool": "run_command", "match": "pytest*", "decision": "allow"},
                                        {"tool": "edit_file", "match": "secrets/*", "decision": "deny"}]}, list(TOOLS))
    assert decide(policy, "run_command", {"argv": ["pytest", "-q"]})[0] == "allow"
    assert decide(policy, "run_command", {"argv": ["rm", "-rf", "."]})[0] == "ask"  # default rule
    assert decide(policy, "edit_file", {"path": "secrets/key.txt"})[0] == "deny"
    assert decide(policy, "edit_file", {"path": "src/app.py"})[0] == "allow"
    assert decide(None, "delete_file", {"path": "a"})[0] == "ask"
    assert decide({"rules": [{"tool": "*", "decision": "allow"}]}, "delete_file", {"path": "a"})[0] == "allow"
    with pytest.raises(ValidationError):
        validate_policy({"rules": [{"tool": "run_command", "decision": "sometimes"}]}, list(TOOLS))


def test_ask_waits_then_approval_resumes_the_run(agent, fake: FakeModelServer) -> None:  # type: ignore[no-untyped-def]
    stack, api, chat, root, start_worker = agent
    command = ["python3", "-c", "open('ran.txt', 'w').write('yes')"]
    fake.script(Reply(tool_calls=[("run_command", {"argv": command})], usage=openai_usage(10, 5)),
                Reply(text="It ran.", usage=openai_usage(20, 3)))
    start_worker()
    run = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "run it"})["run"]
    api.wait_for_run(run["id"], ("waiting",), timeout=30)
    [pending] = api.ok("GET", f"/api/sessions/{chat['id']}/approvals?status=pending")["approvals"]
    assert pending["tool"] == "run_command" and pending["arguments"] == {"argv": command}
    assert not (root / "ran.txt").exists() and len(fake.requests) == 1
    assert any(event["type"] == "approval.requested" for event in events_of(api, chat["id"]))

    decided = api.ok("POST", f"/api/approvals/{pending['id']}/decision", {"decision": "approve"})
    assert decided["approval"]["status"] == "approved" and decided["run_resumed"]
    final = api.wait_for_run(run["id"], timeout=30)
    assert final["result"]["text"] == "It ran." and (root / "ran.txt").read_text() == "yes"
    again = api.post(f"/api/approvals/{pending['id']}/decision", {"decision": "deny"})
    assert again.status_code == 409


def test_deny_tells_the_model_and_nothing_runs(agent, fake: FakeModelServer) -> None:  # type: ignore[no-untyped-def]
    stack, api, chat, root, start_worker = agent
    (root / "keep.txt").write_text("important")
    fake.script(Reply(tool_calls=[("delete_file", {"path": "keep.txt"})], usage=openai_usage(10, 5)),
                Reply(text="Understood, I left it.", usage=openai_usage(20, 3)))
    start_worker()
    run = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "clean up"})["run"]
    api.wait_for_run(run["id"], ("waiting",), timeout=30)
    [pending] = api.ok("GET", f"/api/sessions/{chat['id']}/approvals")["approvals"]
    api.ok("POST", f"/api/approvals/{pending['id']}/decision", {"decision": "deny", "reason": "we need that file"})
    api.wait_for_run(run["id"], timeout=30)
    assert (root / "keep.txt").read_text() == "important"
    told = fake.requests[1]["body"]["messages"][-1]
    assert told["role"] == "tool" and "denied by the user: we need that file" in told["content"]


def test_policy_rules_allow_and_deny_without_asking(agent, fake: FakeModelServer) -> None:  # type: ignore[no-untyped-def]
    stack, api, chat, root, start_worker = agent
    api.ok("PUT", f"/api/projects/{chat['project_id']}/policy", {"rules": [
        {"tool": "run_command", "match": "echo *", "decision": "allow"},
        {"tool": "run_command", "decision": "deny"}]})
    fake.script(Reply(tool_calls=[("run_command", {"argv": ["echo", "hello"]}),
                                  ("run_command", {"argv": ["curl", "http://example.invalid"]})],
                      usage=openai_usage(10, 5)),
                Reply(text="ok", usage=openai_usage(20, 3)))
    start_worker()
    run = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "go"})["run"]
    api.wait_for_run(run["id"], timeout=30)
    results = [message["parts"][0] for message in messages_of(api, chat["id"]) if message["role"] == "tool"]
    assert "hello" in results[0]["content"] and not results[0]["is_error"]
    assert results[1]["is_error"] and results[1]["content"].startswith("denied: the project's approval policy")
    assert api.ok("GET", f"/api/sessions/{chat['id']}/approvals")["approvals"] == []


def test_cancelling_a_waiting_run(agent, fake: FakeModelServer) -> None:  # type: ignore[no-untyped-def]
    stack, api, chat, root, start_worker = agent
    fake.script(Reply(tool_calls=[("run_command", {"argv": ["ls"]})], usage=openai_usage(10, 5)))
    start_worker()
    run = api.ok("POST", f"/api/sessions/{chat['id']}/messages", {"text": "go"})["run"]
    api.wait_for_run(run["id"], ("waiting",), timeout=30)
    api.ok("POST", f"/api/runs/{run['id']}/cancel")
    [pending] = api.ok("GET", f"/api/sessions/{chat['id']}/approvals")["approvals"]
    assert api.post(f"/api/approvals/{pending['id']}/decision", {"decision": "approve"}).status_code == 409
    assert api.run_status(run["id"]) == "cancelled"
    spans = api.ok("GET", f"/api/runs/{run['id']}/spans")["spans"]
    assert spans and all(span["ended_at"] for span in spans)  # nothing left "running" in the trace
