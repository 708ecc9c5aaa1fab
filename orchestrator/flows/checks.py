"""The checks JSON Schema cannot express, over the raw parsed data of a flow definition.

Each check reads the data defensively (a step may be missing its id, `deps` may not be a list: the
schema reports that), so a broken file still gets every other problem reported in the same pass.

    graph:        duplicate ids, unknown deps, switch branches naming missing steps, undeclared
                  batches, cycles (named a -> b -> a), steps that can never run
    references:   every `steps.<id>` in a guard, a case, code or a template names an upstream step
    syntax:       expressions (expressions.py), cron and time zone, the `output` field
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from orchestrator.flows import expressions
from orchestrator.flows.cron import CronError, next_after, zone
from orchestrator.flows.cron import parse as parse_cron
from orchestrator.flows.graph import Graph, find_cycles, never_runs

DataPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Finding:
    """A problem at `path` in the data; `text_line` is the line inside a multi-line value when known.
    definition.py turns the path into a line of the file."""

    step: str | None
    path: DataPath
    message: str
    text_line: int | None = None


class RawFlow:
    """The parsed data with the well-formed steps picked out (first occurrence of each id wins)."""

    def __init__(self, data: Any) -> None:
        self.data = data if isinstance(data, dict) else {}
        steps = self.data.get("steps")
        self.steps: list[tuple[int, dict[str, Any]]] = [
            (index, step) for index, step in enumerate(steps) if isinstance(step, dict)
        ] if isinstance(steps, list) else []
        self.by_id: dict[str, tuple[int, dict[str, Any]]] = {}
        for index, step in self.steps:
            if isinstance(step.get("id"), str):
                self.by_id.setdefault(step["id"], (index, step))
        self.graph = Graph.build([(step_id, strings(raw.get("deps"))) for step_id, (_, raw) in self.by_id.items()],
                                 {step_id: switch_targets(raw) for step_id, (_, raw) in self.by_id.items()
                                  if raw.get("kind") == "switch"})

    def branch_lists(self, raw: dict[str, Any], index: int) -> list[tuple[DataPath, list[str]]]:
        """Each branch of a switch step with the path of its list."""
        found: list[tuple[DataPath, list[str]]] = []
        cases = raw.get("cases")
        for number, case in enumerate(cases if isinstance(cases, list) else []):
            if isinstance(case, dict):
                found.append((("steps", index, "cases", number, "then"), strings(case.get("then"))))
        found.append((("steps", index, "default"), strings(raw.get("default"))))
        return found


def strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def switch_targets(raw: dict[str, Any]) -> list[str]:
    cases = raw.get("cases")
    names = [name for case in (cases if isinstance(cases, list) else []) if isinstance(case, dict)
             for name in strings(case.get("then"))]
    return list(dict.fromkeys(names + strings(raw.get("default"))))


def check_ids(flow: RawFlow) -> list[Finding]:
    """The second and later uses of an id are the duplicates; the first keeps its place in the graph."""
    findings: list[Finding] = []
    for index, raw in flow.steps:
        step_id = raw.get("id")
        if isinstance(step_id, str) and flow.by_id[step_id][0] != index:
            findings.append(Finding(step_id, ("steps", index, "id"),
                                     f"duplicate step id {step_id!r} (also step {flow.by_id[step_id][0] + 1}); "
                                     "ids must be unique"))
    return findings


def check_references_to_steps(flow: RawFlow) -> list[Finding]:
    """Unknown deps, switch branches naming missing steps or the switch itself, undeclared batches."""
    findings: list[Finding] = []
    declared = flow.data.get("batches")
    batches: dict[str, Any] = declared if isinstance(declared, dict) else {}
    for index, raw in flow.steps:
        step_id = raw.get("id") if isinstance(raw.get("id"), str) else None
        for number, dep in enumerate(strings(raw.get("deps"))):
            if dep not in flow.by_id:
                findings.append(Finding(step_id, ("steps", index, "deps", number),
                                        f"deps names {dep!r}, which is no step of this flow"))
        if raw.get("kind") == "switch":
            for path, branch in flow.branch_lists(raw, index):
                for number, target in enumerate(branch):
                    if target not in flow.by_id:
                        findings.append(Finding(step_id, path + (number,),
                                                f"the switch branch names {target!r}, which is no step of this flow"))
                    elif target == step_id:
                        findings.append(Finding(step_id, path + (number,), "a switch cannot name itself as a branch"))
        batch = raw.get("batch")
        if isinstance(batch, str) and batch not in batches:
            declared = ", ".join(sorted(batches)) or "none"
            findings.append(Finding(step_id, ("steps", index, "batch"),
                             f"batch {batch!r} is not declared under `batches` (declared: {declared})"))
    return findings


def check_cycles(flow: RawFlow) -> tuple[list[Finding], set[str]]:
    """Each cycle once, named in the order its steps wait for each other; also the steps on cycles."""
    findings: list[Finding] = []
    on_cycles: set[str] = set()
    for cycle in find_cycles(flow.graph.upstream, list(flow.by_id)):
        on_cycles.update(cycle)
        index = flow.by_id[cycle[0]][0]
        shown = " -> ".join(cycle + [cycle[0]])
        findings.append(Finding(cycle[0], ("steps", index),
                         f"cycle: {shown} (each step waits for the next; a branch waits for its switch)"))
    return findings, on_cycles


def check_never_runs(flow: RawFlow, on_cycles: set[str]) -> list[Finding]:
    """Steps that can never start: they wait, directly or not, for a step with a missing dep or on a cycle."""
    broken = {step_id: "it is on a cycle" for step_id in on_cycles}
    for step_id, (_, raw) in flow.by_id.items():
        if any(dep not in flow.by_id for dep in strings(raw.get("deps"))):
            broken.setdefault(step_id, "it depends on a step that does not exist")
    findings: list[Finding] = []
    for step_id, origin in never_runs(flow.graph.downstream, broken, list(flow.by_id)).items():
        findings.append(Finding(step_id, ("steps", flow.by_id[step_id][0]),
                         f"unreachable: this step can never run, it waits for {origin!r} and {broken[origin]}"))
    return sorted(findings, key=lambda finding: finding.path)


def _reference_findings(step_id: str | None, path: DataPath, named: set[str],
                        allowed: frozenset[str] | None, flow: RawFlow, what: str) -> list[Finding]:
    """`named` steps must exist and (unless `allowed` is None) be upstream of the step."""
    findings: list[Finding] = []
    for name in sorted(named):
        if name not in flow.by_id:
            findings.append(Finding(step_id, path, f"{what} refers to steps.{name}, which is no step of this flow"))
        elif allowed is not None and name not in allowed:
            findings.append(Finding(step_id, path, f"{what} refers to steps.{name}, which is not upstream of "
                                                   f"{step_id!r}; add it to deps (directly or through another step)"))
    return findings


def _javascript(step_id: str | None, path: DataPath, text: Any, allowed: frozenset[str] | None,
                flow: RawFlow, what: str, code: bool) -> list[Finding]:
    """Syntax of a guard, case or code, then the steps it names."""
    if not isinstance(text, str):
        return []
    issues = expressions.check_code(text) if code else expressions.check_expression(text)
    findings = [Finding(step_id, path, f"{what}: {message}", line) for line, message in issues]
    return findings + _reference_findings(step_id, path, expressions.references(text), allowed, flow, what)


def _template(step_id: str | None, path: DataPath, text: Any, allowed: frozenset[str] | None,
              flow: RawFlow, what: str) -> list[Finding]:
    if not isinstance(text, str):
        return []
    placeholders, issues = expressions.parse_template(text)
    findings = [Finding(step_id, path, f"{what}: {message}", line) for line, message in issues]
    named = {placeholder.step for _, placeholder in placeholders if placeholder.step is not None}
    return findings + _reference_findings(step_id, path, named, allowed, flow, what)


def _template_strings(value: Any, path: DataPath) -> Iterator[tuple[DataPath, str]]:
    """Every string inside a `flow` step's input, each a template."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _template_strings(item, path + (str(key),))
    elif isinstance(value, list):
        for number, item in enumerate(value):
            yield from _template_strings(item, path + (number,))


@dataclass(frozen=True)
class JavaScript:
    """A guard, a switch case or a code step's code, where it is in the data."""

    step: str | None
    path: DataPath
    text: Any
    what: str
    code: bool


def javascript_of(flow: RawFlow) -> Iterator[JavaScript]:
    """Every piece of JavaScript the definition holds, in file order."""
    for index, raw in flow.steps:
        step_id = raw.get("id") if isinstance(raw.get("id"), str) else None
        here: DataPath = ("steps", index)
        yield JavaScript(step_id, here + ("when",), raw.get("when"), "when", False)
        cases = raw.get("cases") if raw.get("kind") == "switch" else None
        for number, case in enumerate(cases if isinstance(cases, list) else []):
            if isinstance(case, dict):
                yield JavaScript(step_id, here + ("cases", number, "when"), case.get("when"), f"case {number + 1}",
                                 False)
        if raw.get("kind") == "code":
            yield JavaScript(step_id, here + ("code",), raw.get("code"), "code", True)


def check_step_texts(flow: RawFlow) -> list[Finding]:
    """Guards, switch cases, code, prompts and nested-flow inputs of every step."""
    findings: list[Finding] = []
    for script in javascript_of(flow):
        step_id = script.step
        allowed = flow.graph.ancestors(step_id) if step_id in flow.by_id else frozenset()
        findings += _javascript(step_id, script.path, script.text, allowed, flow, script.what, code=script.code)
    for index, raw in flow.steps:
        step_id = raw.get("id") if isinstance(raw.get("id"), str) else None
        here = ("steps", index)
        allowed = flow.graph.ancestors(step_id) if step_id in flow.by_id else frozenset()
        if raw.get("kind") == "agent":
            findings += _template(step_id, here + ("prompt",), raw.get("prompt"), allowed, flow, "prompt")
        if raw.get("kind") == "flow":
            findings += _nested_flow(flow, step_id, here, raw, allowed)
    return findings


def check_parse(flow: RawFlow, parse: Callable[[list[tuple[str, bool]]], list[tuple[int | None, str] | None]]
                ) -> list[Finding]:
    """What the tokeniser cannot see (`a +* b`): each piece of JavaScript compiled by `parse` (the
    sandbox's, evaluation.parse_javascript: nothing of it runs), all in one call."""
    scripts = [script for script in javascript_of(flow) if isinstance(script.text, str)]
    answers = parse([(script.text, script.code) for script in scripts])
    return [Finding(script.step, script.path, f"{script.what}: {message}", line)
            for script, answer in zip(scripts, answers) if answer is not None for line, message in [answer]]


def _nested_flow(flow: RawFlow, step_id: str | None, here: DataPath, raw: dict[str, Any],
                 allowed: frozenset[str]) -> list[Finding]:
    findings: list[Finding] = []
    if raw.get("flow") is not None and raw.get("flow") == flow.data.get("name"):
        findings.append(Finding(step_id, here + ("flow",), "a flow cannot run itself as a step"))
    for path, text in _template_strings(raw.get("input"), here + ("input",)):
        findings += _template(step_id, path, text, allowed, flow, "input")
    return findings


def check_output(flow: RawFlow) -> list[Finding]:
    """`output` is a step id, or a template (which may name any step: it renders after all of them)."""
    output = flow.data.get("output")
    if not isinstance(output, str) or output in flow.by_id:
        return []
    if "{{" not in output:
        return [Finding(None, ("output",), f"output {output!r} names no step and is not a template "
                                           "(use a step id, or Markdown with {{ steps.<id>.result }})")]
    return _template(None, ("output",), output, None, flow, "output")


def check_schedule(flow: RawFlow) -> list[Finding]:
    """A bad time zone is reported and then read as UTC, so the cron is still checked in the same pass."""
    schedule = flow.data.get("schedule")
    if not isinstance(schedule, dict):
        return []
    findings: list[Finding] = []
    tz = schedule.get("timezone", "UTC")
    if isinstance(tz, str):
        try:
            zone(tz)
        except CronError as error:
            findings.append(Finding(None, ("schedule", "timezone"), str(error)))
            tz = "UTC"
    cron = schedule.get("cron")
    if isinstance(cron, str):
        try:
            spec = parse_cron(cron)
        except CronError as error:
            return findings + [Finding(None, ("schedule", "cron"), f"cron: {error}")]
        if isinstance(tz, str) and next_after(spec, tz, datetime(2000, 1, 1, tzinfo=timezone.utc)) is None:
            findings.append(Finding(None, ("schedule", "cron"), f"cron {cron!r} never fires (no such date)"))
    return findings


def check_all(data: Any) -> list[Finding]:
    """Every check above, in one pass."""
    flow = RawFlow(data)
    cycle_findings, on_cycles = check_cycles(flow)
    return (check_ids(flow) + check_references_to_steps(flow) + cycle_findings
            + check_never_runs(flow, on_cycles) + check_step_texts(flow) + check_output(flow)
            + check_schedule(flow))
