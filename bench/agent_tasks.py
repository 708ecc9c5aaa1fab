"""How useful the embedded model is as a coding agent: small tasks on toy repositories, end to end.

    .venv/bin/python -m bench.agent_tasks [--size 0.5b] [--size 1.5b] [--tasks explain,fix-test,add-function]
                                          [--threads N] [--steps 8] [--timeout 900]

For each model size: `boocode up` in a fresh data directory (embedded PostgreSQL and Redis, the local
model served the way a new user gets it: json tool mode, warm-up, no retry after a timeout), then each
task as a chat message in its own project through the REST API, run by the real worker. A task
succeeds when its check passes on the repository afterwards (run here, outside the agent):

    explain       "What does stats.py do?"         the answer names what it computes (mean / median)
    fix-test      "test_calc.py fails; fix it"     `python test_calc.py` passes afterwards
    add-function  "add reverse_words and a test"   reverse_words("a b c") == "c b a", and a test calls it

Prints one row per task (status, seconds, model calls, tool calls) and the success rate per model.
Costs minutes of CPU per model: do not run it while tests run. Models are fetched into
BOOCODE_LOCAL_MODEL_DIR (default ~/.boocode/models) if missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx

BOOCODE = str(Path(sys.executable).parent / "boocode")
TERMINAL = ("completed", "completed_with_failures", "failed", "cancelled", "interrupted")


@dataclass(frozen=True)
class Task:
    name: str
    files: dict[str, str]
    prompt: str
    check: Callable[[Path, str], str | None]  # (repository, final answer) -> None, or what is wrong


def _python(root: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=30)


def check_explain(root: Path, answer: str) -> str | None:
    words = ("mean", "median", "average", "statistic")
    return None if any(word in answer.lower() for word in words) else f"the answer names none of {words}"


def check_fix(root: Path, answer: str) -> str | None:
    result = subprocess.run([sys.executable, "test_calc.py"], cwd=root, capture_output=True, text=True, timeout=30)
    return None if result.returncode == 0 else f"test_calc.py still fails: {(result.stderr or result.stdout)[-200:]}"


def check_add(root: Path, answer: str) -> str | None:
    result = _python(root, "from textutil import reverse_words; assert reverse_words('a b c') == 'c b a'")
    if result.returncode != 0:
        return f"reverse_words is missing or wrong: {result.stderr.strip()[-200:]}"
    tests = root / "test_textutil.py"
    if not tests.exists() or "reverse_words" not in tests.read_text():
        return "no test of reverse_words in test_textutil.py"
    return None


TASKS = {task.name: task for task in (
    Task("explain", {"stats.py": textwrap.dedent('''\
        def mean(values):
            return sum(values) / len(values)


        def median(values):
            ordered = sorted(values)
            middle = len(ordered) // 2
            if len(ordered) % 2:
                return ordered[middle]
            return (ordered[middle - 1] + ordered[middle]) / 2
        '''), "README.md": "# numbers\n"},
         "What does stats.py do? Answer in one or two sentences.", check_explain),
    Task("fix-test", {"calc.py": "def add(a, b):\n    return a - b\n",
                      "test_calc.py": "from calc import add\n\nassert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
                                      "print('ok')\n"},
         "The test in test_calc.py fails. Find the bug in calc.py and fix it.", check_fix),
    Task("add-function", {"textutil.py": "def shout(text):\n    return text.upper() + '!'\n",
                          "test_textutil.py": "from textutil import shout\n\nassert shout('hi') == 'HI!'\n"},
         "Add a function reverse_words(text) to textutil.py that returns the words of text in reverse order "
         "(reverse_words('a b c') == 'c b a'), and add an assert for it to test_textutil.py.", check_add),
)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`boocode up` in a scratch data directory, stopped with Ctrl-C (SIGINT) like a person would."""

    def __init__(self, size: str, models_dir: Path, scratch: Path, threads: int | None, steps: int) -> None:
        self.data_dir = scratch / f"data-{size}"
        self.port = free_port()
        self.log = scratch / f"up-{size}.log"
        environment = {key: value for key, value in os.environ.items()
                       if not key.startswith(("BOOCODE_", "DATABASE_URL", "REDIS_URL"))}
        environment.update(BOOCODE_DATA_DIR=str(self.data_dir), BOOCODE_PORT=str(self.port),
                           BOOCODE_LOCAL_MODEL=size, BOOCODE_LOCAL_MODEL_DIR=str(models_dir),
                           BOOCODE_LOCAL_MODEL_PORT=str(free_port()), BOOCODE_AGENT_MAX_STEPS=str(steps))
        if threads:
            environment["BOOCODE_LOCAL_MODEL_THREADS"] = str(threads)
        self.environment = environment
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 600) -> httpx.Client:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([BOOCODE, "up"], env=self.environment, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while "BooCode is up" not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"`boocode up` did not start:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        token = json.loads((self.data_dir / "credentials.json").read_text())["token"]
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", headers={"Authorization": f"Bearer {token}"},
                            timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


def run_task(api: httpx.Client, task: Task, root: Path, timeout: float) -> dict:
    root.mkdir(parents=True)
    for name, text in task.files.items():
        (root / name).write_text(text)
    project = api.post("/api/projects", json={"name": task.name, "root_path": str(root)}).raise_for_status().json()
    chat = api.post(f"/api/projects/{project['project']['id']}/sessions", json={"title": task.name}).json()["session"]
    started = time.monotonic()
    run = api.post(f"/api/sessions/{chat['id']}/messages", json={"text": task.prompt}).raise_for_status().json()["run"]
    while run["status"] not in TERMINAL and time.monotonic() - started < timeout:
        time.sleep(1)
        run = api.get(f"/api/runs/{run['id']}").json()["run"]
    seconds = time.monotonic() - started
    spans = api.get(f"/api/runs/{run['id']}/spans").json()["spans"]
    answer = ((run.get("result") or {}).get("text") or "") if run["status"] == "completed" else ""
    problem = task.check(root, answer) if run["status"] == "completed" else \
        f"run {run['status']}: {(run.get('error') or {}).get('code', 'timeout')}: " \
        f"{(run.get('error') or {}).get('message', '')[:160]}"
    return {"task": task.name, "ok": problem is None, "seconds": round(seconds, 1), "status": run["status"],
            "model_calls": sum(1 for span in spans if span["kind"] == "model_call"),
            "tool_calls": sum(1 for span in spans if span["kind"] == "tool_call"), "problem": problem,
            "answer": answer[:200]}


def note(problem: str | None) -> str:
    """One table cell: the first line of what went wrong, without the scratch directory's path."""
    if not problem:
        return ""
    line = " ".join(problem.split())
    return (line[:137] + "…" if len(line) > 140 else line).replace("|", "\\|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", action="append", choices=("0.5b", "1.5b"), help="repeatable; default 0.5b")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from {', '.join(TASKS)}")
    parser.add_argument("--threads", type=int, default=None, help="BOOCODE_LOCAL_MODEL_THREADS (default: up's)")
    parser.add_argument("--steps", type=int, default=8, help="BOOCODE_AGENT_MAX_STEPS")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per task")
    options = parser.parse_args()
    models_dir = Path(os.environ.get("BOOCODE_LOCAL_MODEL_DIR") or Path("~/.boocode/models").expanduser())
    tasks = [TASKS[name] for name in options.tasks.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix="bench-agent-tasks-", dir="/tmp"))  # short: Postgres socket paths
    table: list[tuple[str, dict]] = []
    try:
        for size in options.size or ["0.5b"]:
            server = Server(size, models_dir, scratch, options.threads, options.steps)
            try:
                api = server.start()
                for task in tasks:
                    row = run_task(api, task, scratch / f"{size}-{task.name}", options.timeout)
                    table.append((size, row))
                    print(json.dumps({"size": size, **row}), flush=True)
            finally:
                server.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("\n| model | task | result | seconds | model calls | tool calls | note |\n|---|---|---|---|---|---|---|")
    for size, row in table:
        print(f"| {size} | {row['task']} | {'pass' if row['ok'] else 'fail'} | {row['seconds']:.0f} | "
              f"{row['model_calls']} | {row['tool_calls']} | {note(row['problem'])} |")
    for size in dict.fromkeys(size for size, _ in table):
        rows = [row for row_size, row in table if row_size == size]
        passed = sum(row["ok"] for row in rows)
        print(f"{size}: {passed}/{len(rows)} tasks succeeded, {sum(row['seconds'] for row in rows) / len(rows):.0f} s "
              f"per task on average")


if __name__ == "__main__":
    main()
