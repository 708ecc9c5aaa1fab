"""The README quick start, run from a fresh clone as a newcomer would: `up`, use it, Ctrl-C.

The command is read from the README, so the README cannot drift from what works. It runs without
DATABASE_URL/REDIS_URL, so single-machine mode must provide PostgreSQL and Redis itself.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import REPO, run_cli, wait_for


def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def processes_mentioning(*needles: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
        except psutil.Error:
            continue
        if any(needle in cmdline for needle in needles) and process.pid != os.getpid():
            found.append(process)
    return found


def test_readme_has_exactly_two_quick_start_commands() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2
    assert all((REPO / shlex.split(command)[0]).exists() for command in commands)


def test_quick_start_from_a_fresh_clone(tmp_path: Path) -> None:
    # Not under tmp_path: as root, PostgreSQL runs as another user who must reach the clone's pgserver
    # files, and every pytest session that starts resets /tmp/pytest-of-<user> to 0700.
    clone = Path(f"/tmp/bcq-clone-{os.getpid()}")
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    data_dir = Path(f"/tmp/bcq-{os.getpid()}")  # short: unix sockets live here
    port = free_port()
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("DATABASE_URL", "REDIS_URL", "BOOCODE_URL", "BOOCODE_TOKEN", "VIRTUAL_ENV")}
    model = FakeModelServer().start()
    model.script(Reply(tool_calls=[("list_dir", {})], usage=openai_usage(500, 8)),
                 Reply(text="The project is empty.", usage=openai_usage(600, 6, cached=512)))
    environment.update(BOOCODE_DATA_DIR=str(data_dir), BOOCODE_PORT=str(port), BOOCODE_MODEL_BASE_URL=model.base_url,
                       BOOCODE_MODEL="gpt-4o-mini")
    log_path = tmp_path / "up.log"
    up_command = quick_start_commands()[0]
    with open(log_path, "wb") as log:
        up = subprocess.Popen(shlex.split(up_command), cwd=clone, env=environment, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "BooCode is up" in log_path.read_text(errors="replace") or up.poll() is not None,
                 timeout=480, interval=0.5, message="`up` to report ready")
        assert up.poll() is None, log_path.read_text(errors="replace")
        assert "embedded PostgreSQL" in log_path.read_text() and "embedded Redis" in log_path.read_text()

        boocode = str(clone / ".venv" / "bin" / "boocode")

        def run(*arguments: str) -> str:
            return run_cli(*arguments, environment=environment, executable=boocode).stdout

        project_root = tmp_path / "myrepo"
        project_root.mkdir()
        project = json.loads(run("project", "add", str(project_root), "--json"))
        chat = json.loads(run("session", "create", "--project", project["id"], "--json"))
        probe = json.loads(run("run", "probe", chat["id"], "--steps", "3", "--wait", "--json"))
        assert probe["status"] == "completed"
        assert "run.finished" in run("session", "watch", chat["id"], "--until-run", probe["id"])

        sent = json.loads(run("session", "send", chat["id"], "what is in this project?", "--json"))
        watched = run("session", "watch", chat["id"], "--until-run", sent["run"]["id"])
        assert "completed" in watched.splitlines()[-1]
        shown = json.loads(run("run", "show", sent["run"]["id"], "--json"))
        assert shown["run"]["result"]["text"] == "The project is empty."
        assert "model_call" in run("trace", sent["run"]["id"]) and len(model.requests) == 2

        # The worker holds no secret in its environment (they come in a 0600 file), and if it dies
        # `up` starts it again and runs go on.
        celery = [process for process in processes_mentioning(str(clone)) if "celery" in process.cmdline()
                  and "celery" not in process.parent().cmdline()]  # the main processes, not the worker's pool
        workers = [process for process in celery if "worker" in process.cmdline()]
        assert len(workers) == 1 and [process for process in celery if "beat" in process.cmdline()], celery
        environ = Path(f"/proc/{workers[0].pid}/environ").read_bytes()
        assert b"BOOCODE_SECRET_KEY" not in environ and b"DATABASE_URL=" not in environ and b"REDIS_URL=" not in environ
        assert b"BOOCODE_CONFIG=" in environ and (data_dir / "run" / "secrets.toml").stat().st_mode & 0o077 == 0
        os.killpg(workers[0].pid, signal.SIGKILL)
        wait_for(lambda: "starting it again" in log_path.read_text(errors="replace"), 30, 0.2,
                 message="`up` to restart the worker")
        again = json.loads(run("run", "probe", chat["id"], "--steps", "2", "--wait", "--json"))
        assert again["status"] == "completed"
    finally:
        model.stop()
        if up.poll() is None:
            os.kill(up.pid, signal.SIGINT)  # what Ctrl-C sends to `boocode up`
        try:
            code = up.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            raise
    output = log_path.read_text(errors="replace")
    assert code == 0, output[-3000:]
    assert "stopped" in output
    time.sleep(1)
    leftovers = processes_mentioning(str(clone), str(data_dir))
    assert leftovers == [], [process.cmdline() for process in leftovers]
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.rmtree(clone, ignore_errors=True)
