"""Finding flows: the project's, the server user's personal ones, and the built-in catalog.

Search order (the first definition of a name wins): `<project>/.boocode/flows/*.{yaml,yml,json}`,
`<data dir>/flows/*` (personal; `~/.boocode/flows` by default), then `orchestrator/flows/catalog/`.
The name is the definition's `name`, not the file name. A file that does not validate is reported
with every problem (step id and line) and not registered, so a broken file never hides the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from orchestrator.flows.definition import FlowDefinition, FlowDefinitionError, load
from orchestrator.flows.evaluation import parse_javascript
from orchestrator.tools.base import ToolInputError
from orchestrator.tools.paths import read_beneath

SUFFIXES = (".yaml", ".yml", ".json")
PROJECT_FOLDER = ".boocode/flows"


@dataclass(frozen=True)
class FlowEntry:
    """A flow that validated: its text (what a run keeps), its parsed data and its definition."""

    definition: FlowDefinition
    data: dict[str, Any]
    text: str
    source: str  # project | personal | builtin
    path: str    # relative to the project root for project files; the file name otherwise

    @property
    def name(self) -> str:
        return self.definition.name

    def describe(self) -> dict[str, Any]:
        definition = self.definition
        return {"name": self.name, "description": definition.description, "source": self.source, "path": self.path,
                "steps": [{"id": step.id, "kind": step.kind.value} for step in definition.steps],
                "input": definition.input_schema, "example": self.data.get("example"),
                "schedule": self.data.get("schedule")}


def problem_dicts(problems: list[Any]) -> list[dict[str, Any]]:
    """Problems as the API and CLI show them: step id, line, message."""
    return [{"step": problem.step, "line": problem.line, "message": problem.message} for problem in problems]


def parse(text: str) -> tuple[FlowDefinition | None, dict[str, Any] | None, list[dict[str, Any]]]:
    """The definition and its data, or None and every problem."""
    try:
        definition = load(text, parse_javascript)
    except FlowDefinitionError as error:
        return None, None, problem_dicts(error.problems)
    # validated: no duplicate keys, aliases bounded; JSON round trip so dates and the like are plain text
    return definition, json.loads(json.dumps(yaml.safe_load(text), default=str)), []


def builtin_sources() -> dict[str, str]:
    folder = resources.files("orchestrator.flows").joinpath("catalog")
    return {item.name: item.read_text() for item in sorted(folder.iterdir(), key=lambda item: item.name)
            if item.name.endswith(SUFFIXES)}


def discover(project_root: Path | None, personal_dir: Path | None) -> tuple[dict[str, FlowEntry],
                                                                           list[dict[str, Any]]]:
    """Every flow by name, and the files refused (path, source, problems)."""
    found: dict[str, FlowEntry] = {}
    refused: list[dict[str, Any]] = []

    def consider(source: str, label: str, text: str) -> None:
        definition, data, problems = parse(text)
        if definition is None or data is None:
            refused.append({"path": label, "source": source, "problems": problems})
            return
        found.setdefault(definition.name, FlowEntry(definition, data, text, source, label))

    folders: list[tuple[str, Path, str]] = []
    if project_root is not None:
        folders.append(("project", project_root / PROJECT_FOLDER, PROJECT_FOLDER))
    if personal_dir is not None:
        folders.append(("personal", personal_dir, str(personal_dir)))
    for source, directory, label in folders:
        if not directory.is_dir():
            continue
        for path in sorted(item for item in directory.iterdir() if item.name.endswith(SUFFIXES)):
            try:  # a project's files are opened beneath its root: a link to a file elsewhere is refused
                text = read_beneath(project_root, f"{label}/{path.name}") if source == "project" and project_root \
                    else path.read_text()
            except (OSError, UnicodeDecodeError, ToolInputError) as error:
                refused.append({"path": f"{label}/{path.name}", "source": source,
                                "problems": [{"step": None, "line": None, "message": str(error)}]})
                continue
            consider(source, f"{label}/{path.name}", text)
    for file_name, text in builtin_sources().items():
        consider("builtin", file_name, text)
    return found, refused
