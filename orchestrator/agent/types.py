"""Named agent definitions (`agentType`): a system prompt addition and a tool set.

Built in: `general-purpose` (every tool), `Explore` (read-only: finds and reads code), `Plan`
(read-only: designs an approach) and `reviewer` (read-only: critiques). A project adds its own as
Markdown files with a small front matter, in `.boocode/agents/*.md` or, for compatibility with Claude
Code, `.claude/agents/*.md`:

    ---
    name: security-reviewer
    description: Reviews changes for security problems
    tools: read_file, grep, glob
    model: gpt-4.1-mini
    ---
    You review code for injection, path traversal and secrets in logs. Cite file:line.

A project definition with the same name as a built-in one replaces it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from orchestrator.tools.base import ToolInputError
from orchestrator.tools.paths import read_beneath
from orchestrator.tools.registry import CORE_TOOLS, TOOLS  # an agent type never starts subagents

READ_ONLY = tuple(name for name in CORE_TOOLS if not TOOLS[name].mutating)


@dataclass(frozen=True)
class AgentType:
    name: str
    description: str
    prompt: str
    tools: tuple[str, ...]
    model: str | None = None
    source: str = "builtin"


BUILTIN = {
    agent.name: agent for agent in [
        AgentType("general-purpose", "Researches, edits and runs things; every tool.", "", CORE_TOOLS),
        AgentType("Explore", "Finds and reads code to answer a question; never changes files.",
                  "You explore the code base to answer the question asked. You cannot change files. "
                  "Answer with the facts you found and the paths and lines they come from.", READ_ONLY),
        AgentType("Plan", "Designs an implementation approach; never changes files.",
                  "You design an approach for the task: read what you need, then answer with a numbered plan "
                  "naming the files to change and the risks. You cannot change files.", READ_ONLY),
        AgentType("reviewer", "Reviews code or a change critically; never changes files.",
                  "You review critically: find real defects (correctness, security, missing tests), cite "
                  "file:line, and say how sure you are. You cannot change files.", READ_ONLY),
    ]
}
FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n?(.*)\Z", re.S)


class AgentTypeError(Exception):
    pass


def parse_definition(text: str, source: str) -> AgentType:
    match = FRONT_MATTER.match(text)
    if not match:
        raise AgentTypeError("an agent definition starts with a front matter block between '---' lines")
    fields: dict[str, str] = {}
    for line in match.group(1).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, separator, value = line.partition(":")
        if not separator:
            raise AgentTypeError(f"front matter line {line!r} is not `key: value`")
        fields[key.strip()] = value.strip().strip("\"'")
    name = fields.get("name", "")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise AgentTypeError("`name` must be 1-64 letters, digits, '.', '_' or '-'")
    tools = CORE_TOOLS
    if fields.get("tools"):
        tools = tuple(item.strip() for item in fields["tools"].split(",") if item.strip())
        unknown = [tool for tool in tools if tool not in CORE_TOOLS]
        if unknown:
            raise AgentTypeError(f"unknown tools {', '.join(unknown)}; known: {', '.join(CORE_TOOLS)}")
    return AgentType(name=name, description=fields.get("description", ""), prompt=match.group(2).strip(),
                     tools=tools, model=fields.get("model") or None, source=source)


def discover_agent_types(project_root: Path) -> tuple[dict[str, AgentType], list[dict[str, str]]]:
    """Built-in types, then `.claude/agents`, then `.boocode/agents` (later ones win). Problems are
    reported per file, never fatal."""
    found = dict(BUILTIN)
    problems: list[dict[str, str]] = []
    for folder in (".claude/agents", ".boocode/agents"):
        directory = project_root / folder
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.md")):
            try:  # opened beneath the root: a symlink or hard link to a file elsewhere is refused
                text = read_beneath(project_root, f"{folder}/{path.name}")
                definition = parse_definition(text, f"{folder}/{path.name}")
            except (AgentTypeError, OSError, ToolInputError) as error:
                problems.append({"path": f"{folder}/{path.name}", "message": str(error)})
                continue
            found[definition.name] = definition
    return found, problems


def agent_type_problem(known: dict[str, AgentType], name: str) -> str | None:
    """The one check of an `agentType` name (a workflow's agent(), a subagent, a child run's spec):
    None when the project knows it, else what to tell the caller."""
    if name in known:
        return None
    return f"unknown agentType {name!r}; known: {', '.join(sorted(known))}"
