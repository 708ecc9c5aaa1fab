"""The tools as an attacker would use them: the command sandbox, race-free paths, policy spellings.

These call the real tools on real directories and processes (bubblewrap, the kernel's openat2,
rename races in a thread); the end-to-end attack through a worker is in tests/test_attacks.py.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from orchestrator.sandbox import Limits, Sandbox, find_pids_cgroup
from orchestrator.tools.base import ToolContext
from orchestrator.tools.paths import Root
from orchestrator.tools.policy import decide
from orchestrator.tools.registry import run_tool

RENAME_EXCHANGE = 2
AT_FDCWD = -100
libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "app.py").write_text("print('hi')\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_text("OUTSIDE SECRET\n")
    return project


def call(context: ToolContext, name: str, **arguments):  # type: ignore[no-untyped-def]
    return run_tool(name, json.dumps(arguments), context)


def stdout_of(result) -> str:  # type: ignore[no-untyped-def]
    return result.content.split("--- stdout ---\n", 1)[1].split("\n--- stderr ---", 1)[0]


def processes_with(marker: str) -> list[str]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if marker in line and "pytest" not in line:
            found.append(line)
    return found


def test_no_process_outlives_its_command(root: Path) -> None:
    context = ToolContext(root=root)
    script = ("sleep 9701 & setsid sleep 9702 & nohup sleep 9703 >/dev/null 2>&1 & "
              "(sh -c 'sleep 9704 &' &) ; python3 -c 'import os, time\nif os.fork() == 0:\n os.setsid()\n "
              "os.execvp(\"sleep\", [\"sleep\", \"9705\"])' ; echo started")
    result = call(context, "run_command", argv=["sh", "-c", script])
    assert not result.is_error and "started" in result.content, result.content
    assert processes_with("sleep 970") == []
    timed = call(context, "run_command", argv=["sh", "-c", "setsid sleep 9706 & sleep 9707"], timeout_seconds=1)
    assert timed.data["timed_out"], timed.content
    assert processes_with("sleep 970") == []


def test_a_fork_bomb_meets_the_process_cap(root: Path) -> None:
    if os.getuid() == 0 and find_pids_cgroup() is None:
        pytest.skip("as root the process cap needs a writable pids cgroup, which this machine does not offer")
    context = ToolContext(root=root, sandbox=Sandbox(limits=Limits(processes=24)).with_cgroups())
    result = call(context, "run_command", argv=["sh", "-c", "for i in $(seq 1 60); do sleep 9710 & done; "
                                                            "ps -e | wc -l"], timeout_seconds=20)
    assert "fork" in result.content.lower(), result.content  # sh: Cannot fork / Resource temporarily unavailable
    assert processes_with("sleep 9710") == []


def test_the_sandbox_shows_nothing_of_the_server(root: Path, tmp_path: Path) -> None:
    hidden = root / ".server-data"
    hidden.mkdir()
    (hidden / "credentials.json").write_text('{"token": "bc_admin_secret"}')
    context = ToolContext(root=root, sandbox=Sandbox(hidden=(hidden,)))
    probe = ("import os, socket, json\n"
             "seen = {'root': sorted(os.listdir('/')), 'pids': [p for p in os.listdir('/proc') if p.isdigit()],\n"
             "        'hidden': os.listdir('.server-data'), 'outside': os.path.exists(%r),\n"
             "        'home': os.environ['HOME']}\n"
             "try:\n"
             "    seen['shadow'] = open('/etc/shadow').read()\n"
             "except OSError:\n"
             "    seen['shadow'] = ''\n"
             "for port in (5432, 6379):\n"
             "    s = socket.socket()\n"
             "    s.settimeout(2)\n"
             "    seen[str(port)] = s.connect_ex(('127.0.0.1', port))\n"
             "try:\n"
             "    open('/usr/evil', 'w')\n"
             "    seen['usr_writable'] = True\n"
             "except OSError:\n"
             "    seen['usr_writable'] = False\n"
             "print(json.dumps(seen))\n") % str(tmp_path / "outside" / "f")
    result = call(context, "run_command", argv=["python3", "-c", probe])
    assert not result.is_error, result.content
    seen = json.loads(stdout_of(result))
    assert seen["hidden"] == [] and not seen["outside"] and seen["shadow"] == "" and not seen["usr_writable"]
    assert "root" not in seen["root"] and "var" not in seen["root"] and "home" not in seen["root"]
    assert len(seen["pids"]) <= 3  # bwrap, python and nothing of the machine's
    assert seen["5432"] != 0 and seen["6379"] != 0  # no network: the server's Postgres and Redis are not there
    assert seen["home"] == str(root.resolve())
    assert "bc_admin_secret" not in result.content


def test_a_path_outside_the_sandbox_is_not_a_working_directory(root: Path) -> None:
    context = ToolContext(root=root)
    (root / "out").symlink_to(root.parent / "outside")
    result = call(context, "run_command", argv=["ls"], cwd="out")
    assert result.is_error and "outside the project root" in result.content


def exchange(first: Path, second: Path) -> None:
    if libc.renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")


@pytest.mark.parametrize("method", ["openat2", "walk"])
def test_a_symlink_swapped_in_a_loop_never_lets_a_tool_out(root: Path, tmp_path: Path, method: str) -> None:
    """`dir` (inside) and `link` (-> outside) trade places as fast as a thread can swap them while the
    tools read and write `dir/f` 1,000 times each: no read sees the outside file, no write lands there."""
    (root / "dir").mkdir()
    (root / "dir" / "f").write_text("inside\n")
    (root / "link").symlink_to(tmp_path / "outside")
    outside = tmp_path / "outside" / "f"
    stop = threading.Event()
    swaps = [0]

    def swap() -> None:
        while not stop.is_set():
            exchange(root / "dir", root / "link")
            swaps[0] += 1

    swapper = threading.Thread(target=swap)
    swapper.start()
    escapes, refused = [], 0
    try:
        with Root(root, method=method) as confined:
            for attempt in range(1000):
                for flags in (os.O_RDONLY, os.O_WRONLY | os.O_APPEND):
                    try:
                        fd = confined.open(confined.relative("dir/f"), flags)
                    except OSError:
                        refused += 1
                        continue
                    try:
                        if flags == os.O_RDONLY and b"OUTSIDE" in os.read(fd, 100):
                            escapes.append(("read", attempt))
                        elif flags != os.O_RDONLY:
                            os.write(fd, b"")
                    finally:
                        os.close(fd)
        if method == "openat2":  # the real tools, too
            context = ToolContext(root=root)
            for attempt in range(1000):
                read = call(context, "read_file", path="dir/f")
                if "OUTSIDE" in read.content:
                    escapes.append(("read_file", attempt))
                written = call(context, "create_file", path="dir/g", content="written\n", overwrite=True)
                refused += written.is_error
    finally:
        stop.set()
        swapper.join()
    assert escapes == []
    assert outside.read_text() == "OUTSIDE SECRET\n" and not (tmp_path / "outside" / "g").exists()
    assert swaps[0] > 100 and refused > 0  # the race really ran: some opens met the symlink and were refused


def test_hard_links_and_fifos_are_refused(root: Path, tmp_path: Path) -> None:
    os.link(tmp_path / "outside" / "f", root / "linked")
    os.mkfifo(root / "pipe")
    context = ToolContext(root=root)
    for name, arguments in [("read_file", {"path": "linked"}),
                            ("edit_file", {"path": "linked", "old_text": "OUTSIDE", "new_text": "x"}),
                            ("create_file", {"path": "linked", "content": "x", "overwrite": True})]:
        result = call(context, name, **arguments)
        assert result.is_error and "hard links" in result.content, (name, result.content)
    assert (tmp_path / "outside" / "f").read_text() == "OUTSIDE SECRET\n"
    assert "OUTSIDE" not in call(context, "grep", pattern="OUTSIDE").content
    fifo = call(context, "read_file", path="pipe")  # must not hang waiting for a writer
    assert fifo.is_error and "not a file" in fifo.content


def test_grep_cannot_be_made_to_run_away_and_reads_stream(root: Path) -> None:
    (root / "evil.txt").write_text("a" * 50_000 + "b\naaa\n")
    context = ToolContext(root=root)
    result = call(context, "grep", pattern="(a+)+$")  # line 1 is catastrophic for a backtracking engine
    assert not result.is_error and result.content == "evil.txt:2: aaa"
    backreference = call(context, "grep", pattern=r"(a)\1")
    assert backreference.is_error and "RE2 syntax" in backreference.content
    cancelled = ToolContext(root=root, should_stop=lambda: True)
    (root / "big.txt").write_text("line\n" * 2000)
    stopped = call(cancelled, "grep", pattern="line")
    assert stopped.is_error and "cancelled" in stopped.content


def test_reading_one_line_of_a_huge_file_takes_little_memory(root: Path) -> None:
    with open(root / "huge.log", "wb") as stream:
        for _ in range(150):
            stream.write((b"x" * 1023 + b"\n") * 1024)  # 150 MiB
    code = ("import json, resource, sys\nfrom pathlib import Path\nfrom orchestrator.tools.base import ToolContext\n"
            "from orchestrator.tools.registry import run_tool\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "result = run_tool('read_file', json.dumps({'path': 'huge.log', 'limit': 1}), "
            f"ToolContext(root=Path({str(root)!r})))\n"
            "print(json.dumps([result.content[:40], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before]))\n")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parent.parent)
    head, grown_kib = json.loads(output.stdout)
    assert head.startswith("     1\txxxx")
    assert grown_kib < 50 * 1024, f"reading one line grew the process by {grown_kib} KiB"


@pytest.mark.parametrize("spelling", ["secrets/key", "./secrets/key", "sub/../secrets/key", "secrets//key",
                                      "{root}/secrets/key", "alias/key"])
def test_policy_rules_match_the_path_the_tool_will_use(root: Path, spelling: str) -> None:
    (root / "secrets").mkdir()
    (root / "sub").mkdir()
    (root / "alias").symlink_to("secrets")
    policy = {"rules": [{"tool": "edit_file", "match": "secrets/*", "decision": "deny"}]}
    arguments = {"path": spelling.format(root=root), "old_text": "a", "new_text": "b"}
    assert decide(policy, "edit_file", arguments, root=root)[0] == "deny"
    assert decide(policy, "edit_file", {"path": "src/app.py", "old_text": "a", "new_text": "b"}, root=root)[0] == \
        "allow"


def test_discovery_reads_no_file_outside_the_project(root: Path, tmp_path: Path) -> None:
    from orchestrator.agent.types import discover_agent_types
    from orchestrator.workflow.catalog import discover, read_project_script
    from orchestrator.workflow.script import ScriptError

    outside = tmp_path / "outside"
    (outside / "evil.js").write_text('export const meta = {name: "stolen", description: "outside"};\nreturn 1;\n')
    (outside / "evil.md").write_text("---\nname: stolen\ndescription: outside\n---\nsecret prompt\n")
    (root / ".boocode" / "workflows").mkdir(parents=True)
    (root / ".boocode" / "agents").mkdir(parents=True)
    (root / ".boocode" / "workflows" / "link.js").symlink_to(outside / "evil.js")
    os.link(outside / "evil.js", root / ".boocode" / "workflows" / "hard.js")
    (root / ".boocode" / "agents" / "link.md").symlink_to(outside / "evil.md")
    (root / ".boocode" / "workflows" / "ok.js").write_text(
        'export const meta = {name: "ok", description: "in"};\nreturn 1;\n')
    found, problems = discover(root, None)
    assert "ok" in found and "stolen" not in found
    assert {problem["path"] for problem in problems} >= {".boocode/workflows/link.js", ".boocode/workflows/hard.js"}
    types, type_problems = discover_agent_types(root)
    assert "stolen" not in types and [problem["path"] for problem in type_problems] == [".boocode/agents/link.md"]
    with pytest.raises(ScriptError, match="inside the project"):
        read_project_script(root, ".boocode/workflows/link.js")


def test_commands_use_the_projects_virtualenv_and_say_how_to_configure_a_missing_program(root: Path) -> None:
    """A virtualenv made from the worker's own Python (pyenv here, outside the system directories):
    its python and its tools run inside the sandbox, and a missing program names the settings."""
    subprocess.run([sys.executable, "-m", "venv",
                    "--without-pip", str(root / ".venv")], check=True)
    (root / ".venv" / "bin" / "project-tool").write_text("#!/bin/sh\necho project tool ran\n")
    (root / ".venv" / "bin" / "project-tool").chmod(0o755)
    (root / "tools").mkdir()
    (root / "tools" / "helper").write_text("#!/bin/sh\necho helper ran\n")
    (root / "tools" / "helper").chmod(0o755)
    context = ToolContext(root=root, policy={"path": ["tools"]})
    ran = call(context, "run_command", argv=["python", "-c", "import sys; print(sys.prefix)"])
    assert not ran.is_error and stdout_of(ran).strip() == str((root / ".venv").resolve()), ran.content
    assert "project tool ran" in call(context, "run_command", argv=["project-tool"]).content
    assert "helper ran" in call(context, "run_command", argv=["helper"]).content
    missing = call(context, "run_command", argv=["pytest-that-is-not-installed"])
    assert missing.is_error and ".venv/bin" in missing.content and '"path"' in missing.content
    (root / ".venv" / "pyvenv.cfg").write_text("home = /root\n")  # a hostile pyvenv.cfg mounts nothing
    assert "/root" not in str(call(context, "run_command", argv=["ls", "/"]).content.split("--- stdout ---")[1])
