"""Finding workflows: the project's, the server user's personal ones, and the built-in catalog.

Search order (the first definition of a name wins): `<project>/.boocode/workflows/*.js`,
`<project>/.claude/workflows/*.js` (Claude Code compatibility), `<data dir>/workflows/*.js`
(personal; `~/.boocode/workflows` by default), then the catalog shipped in this package. The name is
`meta.name`, not the file name. A file whose script is refused (bad meta, syntax the loader catches)
is reported with its line and not registered.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from orchestrator.tools.base import ToolInputError
from orchestrator.tools.paths import read_beneath
from orchestrator.workflow.script import ScriptError, WorkflowScript, load_script

SOURCES = (("project", ".boocode/workflows"), ("project", ".claude/workflows"))


@dataclass(frozen=True)
class WorkflowEntry:
    script: WorkflowScript
    source: str  # project | personal | builtin
    path: str    # relative to the project root for project files; the file name otherwise

    @property
    def name(self) -> str:
        return self.script.name

    def describe(self) -> dict[str, Any]:
        meta = self.script.meta
        return {"name": self.name, "description": meta.get("description", ""), "whenToUse": meta.get("whenToUse"),
                "phases": meta.get("phases", []), "args": meta.get("args"), "example": meta.get("example"),
                "source": self.source, "path": self.path}


def builtin_sources() -> dict[str, str]:
    folder = resources.files("orchestrator.workflow").joinpath("catalog")
    return {item.name: item.read_text() for item in sorted(folder.iterdir(), key=lambda item: item.name)
            if item.name.endswith(".js")}


def discover(project_root: Path | None, personal_dir: Path | None) -> tuple[dict[str, WorkflowEntry],
                                                                           list[dict[str, Any]]]:
    found: dict[str, WorkflowEntry] = {}
    problems: list[dict[str, Any]] = []

    def consider(source: str, label: str, text: str) -> None:
        try:
            script = load_script(text)
        except ScriptError as error:
            problems.append({"path": label, "source": source, "message": error.message, "line": error.line})
            return
        found.setdefault(script.name, WorkflowEntry(script, source, label))

    folders: list[tuple[str, Path, str]] = []
    if project_root is not None:
        folders += [(source, project_root / folder, folder) for source, folder in SOURCES]
    if personal_dir is not None:
        folders.append(("personal", personal_dir, str(personal_dir)))
    for source, directory, label in folders:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.js")):
            try:  # a project's files are opened beneath its root: a link to a file elsewhere is refused
                text = read_beneath(project_root, f"{label}/{path.name}") if source == "project" and project_root \
                    else path.read_text()
            except (OSError, UnicodeDecodeError, ToolInputError) as error:
                problems.append({"path": f"{label}/{path.name}", "source": source, "message": str(error), "line": None})
                continue
            consider(source, f"{label}/{path.name}", text)
    for file_name, text in builtin_sources().items():
        consider("builtin", file_name, text)
    return found, problems


def read_project_script(project_root: Path, relative: str) -> str:
    """A script file inside the project (symlinks resolved; nothing outside the root)."""
    try:
        return read_beneath(project_root, relative)
    except ToolInputError as error:
        raise ScriptError(f"{relative}: {error}; script paths must stay inside the project") from None
    except OSError as error:
        if error.errno in (errno.EXDEV, errno.ELOOP):
            raise ScriptError(f"{relative}: script paths must stay inside the project") from None
        raise ScriptError(f"{relative}: no such script in the project") from None
