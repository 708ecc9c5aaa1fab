"""`isolation: 'worktree'`: an agent that works in its own git worktree, kept only if it changed something.

    ensure(root, run_id)    .boocode/worktrees/<run id> on branch boocode/agent-<run id>, made from the
                            project's HEAD; idempotent, so every turn (on any worker) and a repeat after
                            a crash finds the same one
    release(root, run_id)   when the agent ends: nothing changed (no edits, no new files, no commits)
                            -> the worktree and its branch are removed; otherwise both are kept and the
                            changed paths reported

The worktrees live inside the project so every worker that reaches the project reaches them; the
folder ignores itself (`.gitignore` with `*`), so the project's own `git status` stays clean, and the
search tools skip it.
"""

from __future__ import annotations

import fcntl
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from orchestrator.sandbox import Sandbox

FOLDER = Path(".boocode") / "worktrees"
GIT_TIMEOUT = 60


class WorktreeError(Exception):
    pass


@dataclass(frozen=True)
class Worktree:
    path: Path
    branch: str
    base: str


# Git reads the project's own .git/config, which an agent can write: hooks, fsmonitor and filters
# there are commands. The worker's git therefore runs in the sandbox with hooks and fsmonitor off.
HARDENED = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "protocol.allow=never")


def _git(cwd: Path, *arguments: str, sandbox: Sandbox, check: bool = True,
         root: Path | None = None) -> subprocess.CompletedProcess[str]:
    """git in the sandbox, `root` (default `cwd`) writable, hooks and fsmonitor off."""
    try:
        result = sandbox.run(["git", *HARDENED, *arguments], root or cwd, cwd, timeout=GIT_TIMEOUT)
    except FileNotFoundError:
        raise WorktreeError("git is not installed on this worker") from None
    except subprocess.TimeoutExpired:
        raise WorktreeError(f"git {arguments[0]} took longer than {GIT_TIMEOUT}s") from None
    if result.returncode != 0 and result.stderr.startswith("bwrap: execvp"):
        raise WorktreeError("git is not installed on this worker (or not on BOOCODE_TOOL_PATH)")
    if check and result.returncode != 0:
        raise WorktreeError(f"git {' '.join(arguments[:2])} failed: {(result.stderr or result.stdout).strip()}")
    return result


def repository_problem(root: Path, sandbox: Sandbox) -> str | None:
    """Why agents of this project cannot get worktrees, or None when they can."""
    if not root.is_dir():
        return f"the project root {root} does not exist"
    try:
        inside = _git(root, "rev-parse", "--is-inside-work-tree", check=False, sandbox=sandbox)
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return f"the project root {root} is not a git repository"
        if _git(root, "rev-parse", "--verify", "--quiet", "HEAD", check=False, sandbox=sandbox).returncode != 0:
            return f"the git repository at {root} has no commit yet to branch from"
    except WorktreeError as error:
        return str(error)
    return None


def _location(root: Path, run_id: str) -> tuple[Path, str]:
    return root / FOLDER / run_id, f"boocode/agent-{run_id}"


def ensure(root: Path, run_id: str, sandbox: Sandbox) -> Worktree:
    path, branch = _location(root, run_id)
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    head = _git(root, "rev-parse", "HEAD", sandbox=sandbox).stdout.strip()
    if (path / ".git").is_file():  # made by an earlier turn
        return Worktree(path, branch, _base_of(root, branch, sandbox) or head)
    with _repository_lock(root):
        _git(root, "worktree", "prune", sandbox=sandbox)
        branch_exists = _git(root, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False,
                             sandbox=sandbox).returncode == 0
        if branch_exists:  # a repeat after a crash between the two steps
            _git(root, "worktree", "add", str(path), branch, sandbox=sandbox)
        else:
            _git(root, "worktree", "add", "-b", branch, str(path), head, sandbox=sandbox)
        _git(root, "config", f"branch.{branch}.boocodeBase", head, sandbox=sandbox)
    return Worktree(path, branch, head)


@contextmanager
def _repository_lock(root: Path) -> Iterator[None]:
    """One worktree change at a time per project, across this machine's worker processes: `git worktree
    prune` reads every entry and failed on one another agent was adding ("failed to read
    .git/worktrees/<id>/commondir"), and two `git config` or `branch -D` writes of `.git/config` at once
    fail on its lock file. The lock file sits in the self-ignoring worktrees folder."""
    with open(root / FOLDER / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _base_of(root: Path, branch: str, sandbox: Sandbox) -> str | None:
    found = _git(root, "config", "--get", f"branch.{branch}.boocodeBase", check=False, sandbox=sandbox)
    return found.stdout.strip() or None


def changes(worktree: Worktree, sandbox: Sandbox, root: Path) -> list[str]:
    """Paths the agent changed: edits and new files not yet committed, and files in its own commits."""
    status = _git(worktree.path, "status", "--porcelain", "--untracked-files=all", sandbox=sandbox, root=root).stdout
    paths = [line[3:] for line in status.splitlines() if line.strip()]
    committed = _git(worktree.path, "diff", "--name-only", f"{worktree.base}..HEAD", check=False, sandbox=sandbox,
                     root=root).stdout
    paths += [line for line in committed.splitlines() if line.strip()]
    return sorted(set(paths))


def release(root: Path, run_id: str, sandbox: Sandbox) -> dict[str, Any]:
    """The agent ended: remove its worktree (and branch) if it changed nothing, keep it otherwise. What
    happened, for the agent's result. A worktree already gone (removed before a crash) was not kept."""
    path, branch = _location(root, run_id)
    if not (path / ".git").is_file():
        return {"kept": False, "branch": branch}
    try:
        worktree = Worktree(path, branch, _base_of(root, branch, sandbox) or "HEAD")
        changed = changes(worktree, sandbox, root)
        if changed:
            return {"kept": True, "path": str(path), "branch": branch, "base": worktree.base,
                    "changed": changed[:200]}
        with _repository_lock(root):
            _git(root, "worktree", "remove", "--force", str(path), sandbox=sandbox)
            _git(root, "branch", "-D", branch, check=False, sandbox=sandbox)  # also drops its boocodeBase setting
    except WorktreeError as error:
        return {"kept": True, "path": str(path), "branch": branch, "error": str(error)}
    return {"kept": False, "branch": branch}
