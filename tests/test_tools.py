"""Tools against a real directory: confinement, edits with diffs, commands with a clean environment."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.tools.base import ToolContext
from orchestrator.tools.registry import TOOLS, run_tool, tool_schemas


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("def add(a, b):\n    return a - b\n")
    (root / "README.md").write_text("hello\nworld\n")
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    return root


@pytest.fixture
def context(project: Path) -> ToolContext:
    return ToolContext(root=project, max_output_bytes=2000)


def call(context: ToolContext, name: str, **arguments) -> "ToolResult":  # type: ignore[name-defined] # noqa: F821
    return run_tool(name, json.dumps(arguments), context)


def test_escapes_are_refused_and_reveal_nothing(context: ToolContext, project: Path) -> None:
    (project / "link-out").symlink_to(project.parent / "secret.txt")
    (project / "dir-out").symlink_to(project.parent)
    attempts = [
        ("read_file", {"path": "../secret.txt"}),
        ("read_file", {"path": str(project.parent / "secret.txt")}),
        ("read_file", {"path": "link-out"}),
        ("read_file", {"path": "dir-out/secret.txt"}),
        ("read_file", {"path": "src/../../secret.txt"}),
        ("list_dir", {"path": ".."}),
        ("grep", {"pattern": "SECRET", "path": "dir-out"}),
        ("create_file", {"path": "../evil.txt", "content": "x"}),
        ("create_file", {"path": "dir-out/evil.txt", "content": "x"}),
        ("edit_file", {"path": "link-out", "old_text": "TOP", "new_text": "NOT"}),
        ("delete_file", {"path": "link-out"}),
        ("run_command", {"argv": ["ls"], "cwd": ".."}),
    ]
    for name, arguments in attempts:
        result = call(context, name, **arguments)
        assert result.is_error and "outside the project root" in result.content, (name, arguments, result.content)
        assert "TOP SECRET" not in result.content
    assert (project.parent / "secret.txt").read_text() == "TOP SECRET"
    assert not (project.parent / "evil.txt").exists()
    assert "TOP SECRET" not in call(context, "grep", pattern="SECRET").content  # the walk skips links out too
    assert "secret" not in call(context, "glob", pattern="**/*.txt").content


def test_read_file_with_line_ranges(context: ToolContext) -> None:
    whole = call(context, "read_file", path="src/app.py")
    assert not whole.is_error and "     1\tdef add(a, b):" in whole.content
    part = call(context, "read_file", path="README.md", offset=2, limit=1)
    assert "     2\tworld" in part.content and "hello" not in part.content and "[lines 2-2 of 2]" in part.content
    assert call(context, "read_file", path="nope.txt").is_error


def test_edit_file_returns_a_diff_and_explains_misses(context: ToolContext, project: Path) -> None:
    edited = call(context, "edit_file", path="src/app.py", old_text="a - b", new_text="a + b")
    assert not edited.is_error
    assert "-    return a - b" in edited.diff and "+    return a + b" in edited.diff
    assert edited.diff.startswith("--- a/src/app.py\n+++ b/src/app.py")
    assert (project / "src" / "app.py").read_text().endswith("return a + b\n")
    missing = call(context, "edit_file", path="src/app.py", old_text="a * b", new_text="x")
    assert missing.is_error and "not found" in missing.content
    (project / "twice.txt").write_text("x\nx\n")
    ambiguous = call(context, "edit_file", path="twice.txt", old_text="x", new_text="y")
    assert ambiguous.is_error and "appears 2 times" in ambiguous.content
    assert call(context, "edit_file", path="twice.txt", old_text="x", new_text="y", replace_all=True).data[
        "replacements"] == 2


def test_create_and_delete(context: ToolContext, project: Path) -> None:
    created = call(context, "create_file", path="docs/new.md", content="# New\n")
    assert created.diff.startswith("--- /dev/null\n+++ b/docs/new.md") and (project / "docs" / "new.md").exists()
    assert "already exists" in call(context, "create_file", path="docs/new.md", content="again").content
    deleted = call(context, "delete_file", path="docs/new.md")
    assert "-# New" in deleted.diff and not (project / "docs" / "new.md").exists()
    assert call(context, "delete_file", path="src").is_error


def test_run_command_sees_none_of_the_servers_environment(context: ToolContext, project: Path) -> None:
    os.environ["BOOCODE_TEST_SECRET"] = "sk-live-do-not-leak"  # the test process stands in for the server
    try:
        result = call(context, "run_command", argv=["python3", "-c",
                                                    "import os, json; print(json.dumps(dict(os.environ)))"])
    finally:
        del os.environ["BOOCODE_TEST_SECRET"]
    seen = json.loads(result.content.split("--- stdout ---\n", 1)[1].split("\n--- stderr ---", 1)[0])
    assert "sk-live-do-not-leak" not in result.content
    assert set(seen) <= {"PATH", "HOME", "LANG", "LC_ALL", "TERM", "PYTHONDONTWRITEBYTECODE", "PWD", "LC_CTYPE",
                         "TMPDIR"}
    assert seen["HOME"] == str(project.resolve())


def test_run_command_exit_codes_caps_and_timeouts(context: ToolContext) -> None:
    failing = call(context, "run_command", argv=["python3", "-c", "import sys; sys.exit(3)"])
    assert failing.is_error and failing.data["exit_code"] == 3 and "exit code 3" in failing.content
    ok = call(context, "run_command", argv=["ls"], cwd="src")
    assert not ok.is_error and "app.py" in ok.content and ok.data["exit_code"] == 0
    noisy = call(context, "run_command", argv=["python3", "-c", "print('x' * 50000)"])
    assert "[output truncated:" in noisy.content and len(noisy.content) < 3000
    slow = call(context, "run_command", argv=["sleep", "30"], timeout_seconds=1)
    assert slow.is_error and slow.data["timed_out"] and "timed out after 1s" in slow.content
    shell = call(context, "run_command", argv=["echo $HOME && cat /etc/passwd"])
    assert shell.is_error and "not found" in shell.content  # no shell: this is one program name


def test_malformed_arguments_from_the_model_are_explained(context: ToolContext) -> None:
    assert "not valid JSON" in run_tool("read_file", '{"path": ', context).content
    assert "path" in run_tool("read_file", '{"offset": 2}', context).content
    assert "invalid arguments" in run_tool("run_command", '{"argv": "ls -la"}', context).content
    assert "no tool named" in run_tool("rm_rf", "{}", context).content
    assert "invalid arguments" in run_tool("read_file", '{"path": "a", "mode": "w"}', context).content


def test_schemas_come_in_a_stable_order() -> None:
    names = [schema["function"]["name"] for schema in tool_schemas(["run_command", "read_file", "grep"])]
    assert names == ["read_file", "grep", "run_command"]
    assert {name for name, tool in TOOLS.items() if tool.mutating} == {"edit_file", "create_file", "delete_file",
                                                                       "run_command"}


def test_search_skips_agents_worktrees_but_works_inside_one(context: ToolContext, project: Path) -> None:
    copy = project / ".boocode" / "worktrees" / "run-1"
    (copy / "src").mkdir(parents=True)
    (copy / "src" / "app.py").write_text("def add(a, b):\n    return a - b\n")
    (project / ".boocode" / "workflows").mkdir()
    (project / ".boocode" / "workflows" / "w.js").write_text("// return a - b\n")
    assert call(context, "grep", pattern="a - b").content.splitlines() == [".boocode/workflows/w.js:1: // return a - b",
                                                                           "src/app.py:2:     return a - b"]
    assert call(context, "glob", pattern="**/app.py").content == "src/app.py"
    inside = ToolContext(root=copy)  # an agent whose root is its worktree sees its files
    assert call(inside, "grep", pattern="a - b").content == "src/app.py:2:     return a - b"
    assert call(inside, "glob", pattern="**/*.py").content == "src/app.py"


def test_subagent_tools_explain_when_there_is_no_host(context: ToolContext) -> None:
    result = call(context, "spawn_subagent", prompt="x")
    assert result.is_error and "not available to this agent" in result.content
