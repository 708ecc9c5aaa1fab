"""Flow definitions: YAML or JSON text -> every problem at once, or a frozen FlowDefinition.

    validate(text):
        parse with yaml.compose, keeping the line of every key and item (JSON is read the same way)
        the published JSON Schema (schema.json), each violation with its path, step id and line
        the graph: duplicate ids, unknown deps, switch branches naming missing steps, undeclared
        batches, cycles (named), steps that can never run (downstream of a missing step or a cycle)
        expressions and templates: syntax (expressions.py) and that every `steps.<id>` they name is
        upstream of the step using it; cron and time zone; embedded JSON Schemas
        -> [Problem(step, line, message)]
    load(text) -> FlowDefinition, or FlowDefinitionError carrying the same problems

A step named in a switch branch depends on that switch even when its `deps` do not say so: the
branch must not start before the switch has chosen. Nothing here does I/O; the caller reads the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from importlib import resources
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from orchestrator.flows.checks import Finding, RawFlow, check_all, check_parse
from orchestrator.flows.cron import Overlap
from orchestrator.flows.graph import Graph
from orchestrator.flows.rules import TriggerRule

SCHEMA: dict[str, Any] = json.loads(resources.files("orchestrator.flows").joinpath("schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
MAX_FLOW_BYTES = 512 * 1024
MAX_NODES = 100_000
# libyaml when PyYAML was built with it (ten times faster on a 1,000-step flow); same nodes and marks.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition: where (step id, 1-based line) and what to do about it."""

    step: str | None
    line: int | None
    message: str

    def __str__(self) -> str:
        where = ", ".join(part for part in (f"line {self.line}" if self.line else "",
                                             f"step {self.step!r}" if self.step else "") if part)
        return f"{where}: {self.message}" if where else self.message


class FlowDefinitionError(ValueError):
    """`load` refused the text; `problems` lists every reason, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(problem) for problem in problems))
        self.problems = problems


class StepKind(StrEnum):
    AGENT = "agent"
    CODE = "code"
    SWITCH = "switch"
    FLOW = "flow"


@dataclass(frozen=True)
class Retries:
    max_attempts: int = 1
    backoff_seconds: float = 10.0
    backoff_factor: float = 2.0
    max_backoff_seconds: float = 600.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after attempt `attempt` (1-based) failed, before the next one starts."""
        return min(self.max_backoff_seconds, self.backoff_seconds * self.backoff_factor ** (attempt - 1))


@dataclass(frozen=True)
class AgentBody:
    """What a workflow `agent()` call takes; `prompt` is a template."""

    prompt: str
    label: str | None = None
    agent_type: str | None = None
    model: str | None = None
    effort: str | None = None
    schema: Mapping[str, Any] | None = None
    isolation: str | None = None


@dataclass(frozen=True)
class CodeBody:
    """A JavaScript expression or function body, run in the workflow sandbox."""

    code: str


@dataclass(frozen=True)
class Case:
    when: str
    then: tuple[str, ...]


@dataclass(frozen=True)
class SwitchBody:
    """Ordered cases; the first whose `when` is true is taken, `default` when none is."""

    cases: tuple[Case, ...]
    default: tuple[str, ...] = ()

    @property
    def branches(self) -> tuple[tuple[str, ...], ...]:
        """Case branches in order, then the default: the index a resolution names."""
        return tuple(case.then for case in self.cases) + (self.default,)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(step for branch in self.branches for step in branch))


@dataclass(frozen=True)
class FlowBody:
    """Another flow by name (one level of nesting); string values of `input` are templates."""

    flow: str
    input: Any = None


Body = AgentBody | CodeBody | SwitchBody | FlowBody


@dataclass(frozen=True)
class Step:
    id: str
    body: Body
    deps: tuple[str, ...] = ()
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS
    when: str | None = None
    timeout_seconds: float | None = None
    retries: Retries = field(default_factory=Retries)
    batch: str | None = None
    line: int | None = None

    @property
    def kind(self) -> StepKind:
        return {AgentBody: StepKind.AGENT, CodeBody: StepKind.CODE, SwitchBody: StepKind.SWITCH,
                FlowBody: StepKind.FLOW}[type(self.body)]


@dataclass(frozen=True)
class Caps:
    agents: int | None = None
    tokens: int | None = None
    cost: float | None = None


@dataclass(frozen=True)
class Schedule:
    cron: str
    timezone: str = "UTC"
    overlap: Overlap = Overlap.SKIP
    catchup_seconds: float = 300.0
    input: Any = None


@dataclass(frozen=True)
class StepOutput:
    """The run's result is this step's result."""

    step: str


@dataclass(frozen=True)
class TemplateOutput:
    """The run's result is this Markdown template rendered over the input and the steps."""

    template: str


@dataclass(frozen=True)
class FlowDefinition:
    name: str
    steps: tuple[Step, ...]
    description: str = ""
    input_schema: Mapping[str, Any] | None = None
    batches: Mapping[str, int] = field(default_factory=dict)  # name -> max_concurrent
    max_concurrent: int | None = None
    caps: Caps = field(default_factory=Caps)
    output: StepOutput | TemplateOutput | None = None
    schedule: Schedule | None = None

    @cached_property
    def graph(self) -> Graph:
        """Effective dependencies (declared plus switch -> branch target) and a stable order."""
        return Graph.build([(step.id, step.deps) for step in self.steps],
                           {step.id: step.body.targets for step in self.steps if isinstance(step.body, SwitchBody)})

    @cached_property
    def by_id(self) -> dict[str, Step]:
        return {step.id: step for step in self.steps}

    def step(self, step_id: str) -> Step:
        return self.by_id[step_id]


# --- reading the text, with lines ---------------------------------------------------------------


class Lines:
    """The 1-based line of every mapping key, sequence item and value, by path into the data."""

    def __init__(self) -> None:
        self.at: dict[Path, int] = {}
        self.content: dict[Path, int] = {}  # where a scalar's text starts (a block scalar: next line)

    def line(self, path: Path) -> int | None:
        """The line of `path`, or of its nearest ancestor the text has."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.at:
                return self.at[path[:end]]
        return None

    def text_line(self, path: Path, relative: int) -> int | None:
        """Line `relative` (1-based) of the scalar at `path`, as a line of the file."""
        start = self.content.get(path)
        return start + relative - 1 if start is not None else self.line(path)


class _TooLarge(Exception):
    """Aliases expand the document past MAX_NODES, or an anchor contains itself."""


def _walk(node: yaml.Node, path: Path, lines: Lines, duplicates: list[Problem], budget: list[int],
          inside: frozenset[int] = frozenset()) -> None:
    """Record lines depth first. YAML aliases share nodes, so a few lines can expand into millions
    of paths (or a cycle): `budget` bounds the walk, and the later checks only see bounded data."""
    budget[0] -= 1
    if budget[0] < 0 or id(node) in inside:
        raise _TooLarge()
    lines.at.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.ScalarNode):
        lines.content[path] = node.start_mark.line + (2 if node.style in ("|", ">") else 1)
        return
    inside = inside | {id(node)}
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), lines, duplicates, budget, inside)
    elif isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                duplicates.append(Problem(None, key.start_mark.line + 1,
                                          f"the key {name!r} appears twice in the same mapping; "
                                          "the last one would win"))
            seen.add(name)
            lines.at[path + (name,)] = key.start_mark.line + 1
            _walk(value, path + (name,), lines, duplicates, budget, inside)


def _parse(text: str) -> tuple[Any, Lines, list[Problem]]:
    """Data, lines and problems; YAML is a superset of JSON here, so one parser serves both."""
    if len(text.encode("utf-8", "replace")) > MAX_FLOW_BYTES:
        return None, Lines(), [Problem(None, None, f"the definition is over {MAX_FLOW_BYTES // 1024} KiB")]
    loader = LOADER(text)
    try:
        node = loader.get_single_node()
        lines, problems = Lines(), list[Problem]()
        if node is None:
            return None, lines, problems
        _walk(node, (), lines, problems, [MAX_NODES])  # before constructing: it bounds what aliases expand to
        return loader.construct_document(node), lines, problems
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        return None, Lines(), [Problem(None, mark.line + 1 if mark else None,
                                       f"not valid YAML or JSON: {error.problem or error}")]
    except yaml.YAMLError as error:
        return None, Lines(), [Problem(None, None, f"not valid YAML or JSON: {error}")]
    except (_TooLarge, RecursionError):
        return None, Lines(), [Problem(None, None, f"the definition nests too deep or expands to over {MAX_NODES:,} "
                                                   "values (YAML aliases repeat what they name)")]
    finally:
        loader.dispose()


# --- problems ------------------------------------------------------------------------------------


def _step_id(data: Any, path: Path) -> str | None:
    """The id of the step a path points into, if it has one."""
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
        steps = data.get("steps") if isinstance(data, dict) else None
        if isinstance(steps, list) and path[1] < len(steps) and isinstance(steps[path[1]], dict):
            step_id = steps[path[1]].get("id")
            return step_id if isinstance(step_id, str) else None
    return None


def _show_path(path: Path) -> str:
    shown = ""
    for part in path:
        shown += f"[{part}]" if isinstance(part, int) else (f".{part}" if shown else str(part))
    return shown or "the flow"


def _error_path(error: ValidationError) -> Path:
    """Where to point: for an unexpected key, the key itself rather than the mapping holding it."""
    path = tuple(error.absolute_path)
    if error.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(error.instance, dict):
        unexpected = [key for key in error.instance if f"'{key}'" in error.message]
        if unexpected:
            return path + (str(unexpected[0]),)
    return path


def _schema_problems(data: Any, lines: Lines) -> list[Problem]:
    """Every schema violation (iter_errors, not the first), each at the line of what it is about."""
    problems = []
    for error in VALIDATOR.iter_errors(data):
        path = tuple(error.absolute_path)
        problems.append(Problem(_step_id(data, path), lines.line(_error_path(error)),
                                f"{_show_path(path)}: {error.message}"))
    return problems


def _embedded_schema_problems(data: Any, lines: Lines) -> list[Problem]:
    """`input` and agent `schema` must themselves be valid JSON Schemas."""
    places: list[Path] = [("input",)] if isinstance(data, dict) and isinstance(data.get("input"), dict) else []
    steps = data.get("steps") if isinstance(data, dict) else None
    for index, raw in enumerate(steps if isinstance(steps, list) else []):
        if isinstance(raw, dict) and isinstance(raw.get("schema"), dict):
            places.append(("steps", index, "schema"))
    problems = []
    for path in places:
        schema = data
        for part in path:
            schema = schema[part]
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as error:
            problems.append(Problem(_step_id(data, path), lines.line(path),
                                    f"{_show_path(path)} is not a valid JSON Schema: {error.message}"))
    return problems


def _finding_problem(finding: Finding, lines: Lines) -> Problem:
    line = lines.text_line(finding.path, finding.text_line) if finding.text_line else lines.line(finding.path)
    return Problem(finding.step, line, finding.message)


# Compiles pieces of JavaScript without running them: [(text, is_code)] -> [None | (line, message)].
# The shell passes the sandbox's (evaluation.parse_javascript); without one only the tokeniser checks.
JavaScriptParser = Callable[[list[tuple[str, bool]]], list[tuple[int | None, str] | None]]


def validate(text: str, parse_javascript: JavaScriptParser | None = None) -> list[Problem]:
    """Every problem with a flow definition, in file order; an empty list means `load` succeeds."""
    return _validated(text, parse_javascript)[0]


def _validated(text: str, parse_javascript: JavaScriptParser | None = None) -> tuple[list[Problem], Any, Lines]:
    """Problems plus what was parsed, so `load` builds from the same parse it validated. JavaScript is
    compiled (`parse_javascript`) only when nothing else is wrong: a broken file is not sent on."""
    data, lines, problems = _parse(text)
    if data is None and not problems:
        problems.append(Problem(None, None, "the definition is empty"))
    if problems and data is None:
        return problems, data, lines
    problems += _schema_problems(data, lines)
    problems += _embedded_schema_problems(data, lines)
    problems += [_finding_problem(finding, lines) for finding in check_all(data)]
    if not problems and parse_javascript is not None:
        problems += [_finding_problem(finding, lines) for finding in check_parse(RawFlow(data), parse_javascript)]
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda problem: (problem.line or 0)), data, lines


# --- building the definition ----------------------------------------------------------------------


def _ids(value: Any) -> tuple[str, ...]:
    return tuple(value or ())


def _body(raw: dict[str, Any]) -> Body:
    """One body type per kind: the kind-specific fields cannot be mixed up or left unset."""
    kind = StepKind(raw["kind"])
    if kind == StepKind.AGENT:
        return AgentBody(prompt=raw["prompt"], label=raw.get("label"), agent_type=raw.get("agent_type"),
                         model=raw.get("model"), effort=raw.get("effort"), schema=raw.get("schema"),
                         isolation=raw.get("isolation"))
    if kind == StepKind.CODE:
        return CodeBody(code=raw["code"])
    if kind == StepKind.SWITCH:
        return SwitchBody(cases=tuple(Case(when=case["when"], then=_ids(case["then"])) for case in raw["cases"]),
                          default=_ids(raw.get("default")))
    return FlowBody(flow=raw["flow"], input=raw.get("input"))


def _step(raw: dict[str, Any], line: int | None) -> Step:
    return Step(id=raw["id"], body=_body(raw), deps=_ids(raw.get("deps")),
                trigger_rule=TriggerRule(raw.get("trigger_rule", TriggerRule.ALL_SUCCESS)),
                when=raw.get("when"), timeout_seconds=raw.get("timeout_seconds"),
                retries=Retries(**raw.get("retries", {})), batch=raw.get("batch"), line=line)


def _output(data: dict[str, Any]) -> StepOutput | TemplateOutput | None:
    """A step id wins over a template: validation refused anything that is neither."""
    output = data.get("output")
    if output is None:
        return None
    step_ids = {step["id"] for step in data["steps"]}
    return StepOutput(output) if output in step_ids else TemplateOutput(output)


def build(data: dict[str, Any], lines: Lines | None = None) -> FlowDefinition:
    """Dataclasses from data that `validate` accepted (anything else may raise KeyError)."""
    lines = lines or Lines()
    schedule = data.get("schedule")
    return FlowDefinition(
        name=data["name"], description=data.get("description", ""),
        steps=tuple(_step(raw, lines.line(("steps", index))) for index, raw in enumerate(data["steps"])),
        input_schema=data.get("input"),
        batches={name: batch["max_concurrent"] for name, batch in (data.get("batches") or {}).items()},
        max_concurrent=data.get("max_concurrent"), caps=Caps(**(data.get("caps") or {})),
        output=_output(data),
        schedule=Schedule(cron=schedule["cron"], timezone=schedule.get("timezone", "UTC"),
                          overlap=Overlap(schedule.get("overlap", Overlap.SKIP)),
                          catchup_seconds=schedule.get("catchup_seconds", 300.0),
                          input=schedule.get("input")) if schedule else None,
    )


def load(text: str, parse_javascript: JavaScriptParser | None = None) -> FlowDefinition:
    """The definition, or FlowDefinitionError with every problem (the same list `validate` gives)."""
    problems, data, lines = _validated(text, parse_javascript)
    if problems:
        raise FlowDefinitionError(problems)
    return build(data, lines)
