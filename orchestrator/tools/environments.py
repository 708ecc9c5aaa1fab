"""Which programs a project's commands find: its own virtualenv and tool folders before the system's.

    PATH = <policy "path" entries> + .venv/bin + venv/bin (those that exist, inside the root)
           + BOOCODE_TOOL_PATH
    a virtualenv's base interpreter (pyvenv.cfg `home`) is mounted read-only into the sandbox, so
    `.venv/bin/python` works even when it links to a Python outside the system directories

The project is untrusted, and so is its pyvenv.cfg: the base interpreter is mounted only when
`home` is the bin directory of a real Python installation (`<prefix>/bin/python3.X` and
`<prefix>/lib/python3.X/os.py`), read-only, and the server's own files stay masked inside it
(orchestrator/sandbox.py). Entries of the policy's `path` are relative to the root and must stay
inside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VIRTUALENVS = (".venv", "venv")


@dataclass(frozen=True)
class CommandEnvironment:
    path_first: tuple[str, ...]  # absolute directories put before BOOCODE_TOOL_PATH
    read_only: tuple[Path, ...]  # directories outside the root the sandbox must show (interpreters)


def _inside(root: Path, relative: str) -> Path | None:
    candidate = Path(os.path.realpath(root / relative))
    return candidate if candidate.is_dir() and (candidate == root or root in candidate.parents) else None


def python_installation(home: str) -> Path | None:
    """The prefix of the Python installation whose bin directory is `home`, or None if it is not one."""
    bin_directory = Path(os.path.realpath(home))
    prefix = bin_directory.parent
    if not bin_directory.is_dir() or prefix == Path("/"):
        return None
    for library in prefix.glob("lib/python3.*"):
        version = library.name.removeprefix("python")
        if (library / "os.py").is_file() and (bin_directory / f"python{version}").exists():
            return prefix
    return None


def command_environment(root: Path, policy: dict[str, Any] | None) -> CommandEnvironment:
    root = Path(os.path.realpath(root))
    first: list[str] = []
    read_only: list[Path] = []
    for relative in [*(policy or {}).get("path", []), *(f"{name}/bin" for name in VIRTUALENVS)]:
        directory = _inside(root, relative)
        if directory is None or str(directory) in first:
            continue
        first.append(str(directory))
        config = directory.parent / "pyvenv.cfg"
        if config.is_file():
            for line in config.read_text(errors="replace").splitlines()[:50]:
                key, _, value = line.partition("=")
                if key.strip() == "home":
                    prefix = python_installation(value.strip())
                    if prefix is not None and prefix not in read_only:
                        read_only.append(prefix)
    return CommandEnvironment(tuple(first), tuple(read_only))


def validate_path_entries(value: Any) -> list[str]:
    """The policy's `path`: directories relative to the root; raises ValueError saying what is wrong."""
    if not isinstance(value, list) or not all(isinstance(entry, str) and entry.strip() for entry in value):
        raise ValueError('"path" is a list of directories relative to the project root, e.g. [".venv/bin"]')
    for entry in value:
        if entry.startswith("/") or ".." in Path(entry).parts or "\x00" in entry:
            raise ValueError(f'"path" entry {entry!r} must be relative to the project root and stay inside it')
    return value
