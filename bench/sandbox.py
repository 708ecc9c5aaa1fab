"""What the command sandbox costs: `true` in the bubblewrap sandbox against `true` started plainly.

    .venv/bin/python -m bench.sandbox [--runs 200]

Plain:     subprocess.run(["true"]) with a clean environment (what run_command did before the sandbox).
Sandboxed: the same through orchestrator.sandbox (prlimit + bwrap with its namespaces, mounts and,
           where the machine offers one, a pids cgroup), then killed and cleaned up as run_command does.
Tool:      the whole run_command tool (cwd opened beneath the root, output files, the sandbox).
Prints per-command milliseconds (median, p90) and the ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from orchestrator.sandbox import Sandbox
from orchestrator.tools.base import ToolContext
from orchestrator.tools.registry import run_tool


def measure(runs: int, action: Callable[[], object]) -> list[float]:
    action()  # warm the page cache and the binaries
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def summary(name: str, timings: list[float]) -> float:
    median = statistics.median(timings)
    p90 = sorted(timings)[int(len(timings) * 0.9) - 1]
    print(f"{name:<28} median {median:7.2f} ms   p90 {p90:7.2f} ms")
    return median


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    runs = parser.parse_args().runs
    root = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    sandbox = Sandbox().with_cgroups()
    environment = sandbox.environment(root)

    def plain() -> None:
        subprocess.run(["true"], cwd=root, env=environment, stdin=subprocess.DEVNULL, check=True)

    def sandboxed() -> None:
        process = sandbox.start(["true"], root, root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        process.popen.wait()
        process.kill()

    context = ToolContext(root=root, sandbox=sandbox)

    def tool() -> None:
        result = run_tool("run_command", json.dumps({"argv": ["true"]}), context)
        assert not result.is_error, result.content

    print(f"{runs} runs each; pids cgroup: {sandbox.cgroup_root or 'none (rlimits only)'}")
    base = summary("plain true", measure(runs, plain))
    boxed = summary("sandboxed true", measure(runs, sandboxed))
    whole = summary("run_command tool (sandboxed)", measure(runs, tool))
    print(f"sandbox cost per command: {boxed - base:.2f} ms ({boxed / base:.1f}x plain); "
          f"whole tool {whole / base:.1f}x plain")


if __name__ == "__main__":
    main()
