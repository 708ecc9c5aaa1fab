"""Who the agent of a run is: its model, tools, extra prompt and output schema (`AgentProfile`), from
the run's `spec` (a workflow's agent() options, a subagent's agentType) and the project."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from orchestrator.agent.types import agent_type_problem, discover_agent_types
from orchestrator.domain.failure import Failure
from orchestrator.llm.provider import Provider
from orchestrator.store.models import Project
from orchestrator.tools.registry import CORE_TOOLS, TOOLS

SCHEMA_RETRIES = 2


class ProfileError(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass(frozen=True)
class AgentProfile:
    """How this run's agent differs from a chat agent: a child run's `spec` (a workflow's agent() options)
    picks the agent type (prompt and tools), the model and an output schema."""

    provider: Provider
    tools: tuple[str, ...]
    prompt: str = ""
    schema: dict[str, Any] | None = None
    spec: dict[str, Any] = field(default_factory=dict)

    def request_options(self) -> dict[str, Any]:
        """A workflow agent's `effort` goes to the model as `reasoning_effort` (reasoning models use it)."""
        return {"reasoning_effort": self.spec["effort"]} if self.spec.get("effort") else {}

    def system(self, base: str) -> str:
        parts = [base]
        if self.prompt:
            parts.append(self.prompt)
        if self.schema is not None:
            parts.append("Your final answer must be only a JSON value (no prose, no code fence) that validates "
                         f"against this JSON Schema:\n{json.dumps(self.schema, sort_keys=True)}")
        return "\n\n".join(parts)


def agent_profile(run: Any, project: Project, provider: Provider) -> AgentProfile:
    spec = (run.input or {}).get("spec") or {}
    top_level = run.parent_id is None and run.kind == "agent"  # only a chat agent starts background subagents
    tools, prompt, model = tuple(TOOLS) if top_level else CORE_TOOLS, "", spec.get("model")
    if spec.get("agentType"):
        known, _ = discover_agent_types(Path(project.root_path))
        problem = agent_type_problem(known, spec["agentType"])
        if problem is not None:
            raise ProfileError(Failure("unknown_agent_type", problem))
        agent_type = known[spec["agentType"]]
        tools, prompt, model = agent_type.tools, agent_type.prompt, model or agent_type.model
    if model:
        provider = replace(provider, model=model)
    return AgentProfile(provider=provider, tools=tools, prompt=prompt, schema=spec.get("schema"), spec=spec)


def check_against_schema(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """The answer as JSON (a code fence around it is tolerated) and what is wrong with it, if anything."""
    candidate = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", candidate, re.S)
    if fence:
        candidate = fence.group(1)
    try:
        value = json.loads(candidate)
    except json.JSONDecodeError as error:
        return None, f"it is not JSON ({error.msg} at position {error.pos})"
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda error: list(error.absolute_path))
    if errors:
        return None, "; ".join(f"{'/'.join(map(str, error.absolute_path)) or 'value'}: {error.message}"
                               for error in errors[:3])
    return value, None
