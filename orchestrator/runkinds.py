"""Run kinds: the one table that says, for each kind, its Celery task, its queue, its handler and
what its end sets going. Adding a kind is one entry here plus its handler module.

    RUN_KINDS[kind] = RunKindSpec(kind, task, queue, handler="module:factory", finish_hook="module:factory")
        task, queue     -> jobs.py derives Celery routing from them (web and worker agree)
        handler         -> factory(settings) -> Handler: executes one claim of a run (lifecycle.py)
        finish_hook     -> factory(settings) -> FinishHook: runs its end starts (optional)

Handlers and hooks are named by import path and loaded only by the worker (`load_handlers`), so
the web front end, which needs task names, never imports the agent runtime. A kind that is not in
the table is an error wherever it is met (`UnknownRunKindError`): never a silent fallback.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from orchestrator.domain.enums import RunKind
from orchestrator.errors import OrchestratorError

if TYPE_CHECKING:
    from orchestrator.lifecycle import FinishHook, Handler
    from orchestrator.settings import Settings


class UnknownRunKindError(OrchestratorError):
    code = "unknown_run_kind"


@dataclass(frozen=True)
class RunKindSpec:
    kind: str
    task: str  # the Celery task name: dotted, explicit
    queue: str
    handler: str  # "module:factory", factory(settings) -> Handler
    finish_hook: str | None = None  # "module:factory", factory(settings) -> FinishHook


RUN_KINDS: dict[str, RunKindSpec] = {spec.kind: spec for spec in (
    RunKindSpec(RunKind.AGENT.value, "turns.run", "turns", "orchestrator.agent.loop:handler_from_settings",
                "orchestrator.store.subagents:agent_finish_hook"),
    RunKindSpec(RunKind.SUBAGENT.value, "subagents.turn", "subagents", "orchestrator.agent.loop:handler_from_settings",
                "orchestrator.store.subagents:subagent_finish_hook"),
    RunKindSpec(RunKind.PROBE.value, "runs.probe", "maintenance", "orchestrator.probe:handler_from_settings"),
    RunKindSpec(RunKind.WORKFLOW.value, "workflows.tick", "workflows",
                "orchestrator.workflow.engine:handler_from_settings"),
    RunKindSpec(RunKind.FLOW.value, "flows.tick", "flows", "orchestrator.flows.runner:handler_from_settings"),
)}


def spec_for(kind: str, kinds: Mapping[str, RunKindSpec] = RUN_KINDS) -> RunKindSpec:
    try:
        return kinds[kind]
    except KeyError:
        raise UnknownRunKindError(f"there is no run kind {kind!r}; known kinds: {', '.join(sorted(kinds))}") from None


def task_for_kind(kind: str, kinds: Mapping[str, RunKindSpec] = RUN_KINDS) -> str:
    return spec_for(kind, kinds).task


def _load(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def load_handlers(settings: "Settings", kinds: Mapping[str, RunKindSpec] = RUN_KINDS) -> dict[str, "Handler"]:
    """Kind -> handler, each factory called once (kinds sharing a factory share the handler)."""
    made: dict[str, Any] = {}
    for spec in kinds.values():
        if spec.handler not in made:
            made[spec.handler] = _load(spec.handler)(settings)
    return {kind: made[spec.handler] for kind, spec in kinds.items()}


def load_finish_hooks(settings: "Settings", kinds: Mapping[str, RunKindSpec] = RUN_KINDS) -> dict[str, "FinishHook"]:
    return {kind: _load(spec.finish_hook)(settings) for kind, spec in kinds.items() if spec.finish_hook}
