"""A flow's caps (`caps: {agents, tokens, cost}` in its file): may the next agent or nested flow start,
and the most a run of a definition can call (the static part of its estimate). Pure: no I/O.

    check(caps, spent) -> None | CapReached
        agents: spent.agents >= caps.agents -> CapReached  (each attempt of an agent step is one agent)
        tokens: spent.tokens >= caps.tokens -> CapReached
        cost:   spent.cost   >= caps.cost   -> CapReached
        otherwise                           -> None: the dispatch may go

    outline(definition, nested) -> steps by kind, agent steps, the most agent calls (every attempt of
        every agent step, every switch branch taken, nested flows through their definitions)

The runner (orchestrator/flows/runner.py) asks `check` before each dispatch of an agent or flow step
and fails the step with `CapReached.error()` (not retryable) when it says no. What is running is
never stopped, so tokens and cost can end above their cap by what the agents under way spend; the
caps guarantee that nothing new starts once they are reached.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.flows.definition import Caps, FlowBody, FlowDefinition, StepKind, SwitchBody

CAP_ERROR = "flow_cap"


@dataclass(frozen=True)
class Spent:
    """What a flow run's current results have cost so far: agents started (attempts included, nested
    flows' agents too), and the tokens and cost of those agents."""

    agents: int = 0
    tokens: int = 0
    cost: float = 0.0

    def plus_agent(self) -> "Spent":
        return replace(self, agents=self.agents + 1)


@dataclass(frozen=True)
class CapReached:
    """The cap `cap` is reached: `spent` of it is used, `limit` allowed."""

    cap: str  # agents | tokens | cost
    spent: int | float
    limit: int | float

    def message(self) -> str:
        if self.cap == "cost":
            figures = f"${self.spent:.4f} spent, the cap is ${self.limit:.4f}"
        else:
            figures = f"{self.spent} {'agents started' if self.cap == 'agents' else 'tokens spent'}, " \
                      f"the cap is {self.limit}"
        return (f"the flow's {self.cap} cap is reached ({figures}), so this step was not started; "
                f"raise caps.{self.cap} in the flow file to let more run")

    def error(self) -> dict[str, Any]:
        """The failed step's error: not retried (another attempt would meet the same cap)."""
        return {"code": CAP_ERROR, "retryable": False, "message": self.message(), "cap": self.cap,
                "spent": self.spent, "limit": self.limit}


def is_capped(caps: Caps) -> bool:
    """Does the flow set any cap (only then is what it spent worth counting)?"""
    return any(limit is not None for limit in (caps.agents, caps.tokens, caps.cost))


def check(caps: Caps, spent: Spent) -> CapReached | None:
    """May one more agent or nested flow start? The first cap reached, in the order agents, tokens, cost."""
    if caps.agents is not None and spent.agents >= caps.agents:
        return CapReached("agents", spent.agents, caps.agents)
    if caps.tokens is not None and spent.tokens >= caps.tokens:
        return CapReached("tokens", spent.tokens, caps.tokens)
    if caps.cost is not None and spent.cost >= caps.cost:
        return CapReached("cost", round(spent.cost, 8), caps.cost)
    return None


def bounds(caps: Caps) -> dict[str, Any]:
    return {"agents": caps.agents, "tokens": caps.tokens, "cost": caps.cost}


def agent_calls(definition: FlowDefinition) -> int:
    """The most agents the definition's own agent steps can start: every attempt of every one of them
    (a switch's branches all counted: which one is taken is known only when it runs), bounded by its
    agents cap."""
    calls = sum(step.retries.max_attempts for step in definition.steps if step.kind == StepKind.AGENT)
    return calls if definition.caps.agents is None else min(calls, definition.caps.agents)


def outline(definition: FlowDefinition, nested: Mapping[str, FlowDefinition | None]) -> dict[str, Any]:
    """The static part of a flow's estimate. `nested` maps the flows its flow steps name to their
    definitions (None: not found, so not counted). A nested flow's own flow steps never run (one level
    of nesting), so only its agent steps count."""
    by_kind = {kind.value: 0 for kind in StepKind}
    for step in definition.steps:
        by_kind[step.kind.value] += 1
    flows: list[dict[str, Any]] = []
    nested_calls = 0
    for step in definition.steps:
        if isinstance(step.body, FlowBody):
            found = nested.get(step.body.flow)
            calls = None if found is None else step.retries.max_attempts * agent_calls(found)
            nested_calls += calls or 0
            flows.append({"step": step.id, "flow": step.body.flow, "found": found is not None,
                          "max_agent_calls": calls})
    own = sum(step.retries.max_attempts for step in definition.steps if step.kind == StepKind.AGENT)
    switches = [{"step": step.id, "branches": [list(branch) for branch in step.body.branches]}
                for step in definition.steps if isinstance(step.body, SwitchBody)]
    return {"steps": by_kind, "agent_steps": by_kind[StepKind.AGENT.value], "max_agent_calls": own + nested_calls,
            "switches": switches, "nested_flows": flows}
