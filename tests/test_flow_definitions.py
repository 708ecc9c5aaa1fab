"""Flow definitions: the published schema, every problem at once with its step and line, the catalog.

Pure: no services. Each bad definition below is a complete file; the expected line is counted in it.
"""

from __future__ import annotations

import ast
import json
import textwrap
from importlib import resources
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from orchestrator.flows import expressions
from orchestrator.flows.cron import Overlap
from orchestrator.flows.definition import (
    SCHEMA,
    AgentBody,
    CodeBody,
    FlowBody,
    FlowDefinitionError,
    Problem,
    Retries,
    StepKind,
    StepOutput,
    SwitchBody,
    TemplateOutput,
    load,
    validate,
)
from orchestrator.flows.graph import find_cycles, never_runs
from orchestrator.flows.rules import TriggerRule

CATALOG = Path(str(resources.files("orchestrator.flows").joinpath("catalog")))
PACKAGE = Path(str(resources.files("orchestrator.flows")))


def flow(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


GOOD = flow("""
    name: good
    input: {type: object, properties: {topic: {type: string}}}
    batches: {slow: {max_concurrent: 1}}
    max_concurrent: 3
    caps: {agents: 4, tokens: 1000, cost: 0.5}
    schedule: {cron: "0 6 * * mon-fri", timezone: Europe/Paris, overlap: buffer_one, catchup_seconds: 120}
    steps:
      - id: gather
        kind: agent
        prompt: "Collect notes on {{ input.topic }}"
        effort: low
        batch: slow
        timeout_seconds: 30
        retries: {max_attempts: 3, backoff_seconds: 2}
      - id: pick
        kind: switch
        deps: [gather]
        cases:
          - when: "steps.gather.result.length > 100"
            then: [shorten]
        default: [keep]
      - id: shorten
        kind: code
        code: "return steps.gather.result.slice(0, 100)"
      - id: keep
        kind: code
        code: "steps.gather.result"
      - id: sub
        kind: flow
        flow: other-flow
        deps: [shorten, keep]
        trigger_rule: none_failed_min_one_success
        input: {text: "{{ steps.shorten.result }}{{ steps.keep.result }}"}
    output: sub
""")


def test_the_published_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    on_disk = json.loads((PACKAGE / "schema.json").read_text())
    assert on_disk == SCHEMA


@pytest.mark.parametrize("path", sorted(CATALOG.glob("*.yaml")), ids=lambda path: path.name)
def test_every_catalog_flow_is_valid_and_loads(path: Path) -> None:
    import yaml
    text = path.read_text()
    assert validate(text) == []
    assert list(Draft202012Validator(SCHEMA).iter_errors(yaml.safe_load(text))) == []
    definition = load(text)
    assert definition.name == path.stem
    assert any(step.kind == StepKind.SWITCH or step.when for step in definition.steps)
    assert definition.output is not None


def test_the_catalog_has_the_three_flows_of_the_issue() -> None:
    assert {path.stem for path in CATALOG.glob("*.yaml")} >= {"review-diff", "triage-failing-test", "release-notes"}


def test_a_good_definition_loads_into_frozen_dataclasses_with_defaults() -> None:
    definition = load(GOOD)
    gather, pick, shorten, _keep, sub = definition.steps
    assert isinstance(gather.body, AgentBody) and gather.body.effort == "low" and gather.batch == "slow"
    assert gather.retries == Retries(max_attempts=3, backoff_seconds=2)
    assert gather.line == 8 and pick.line == 15
    assert isinstance(pick.body, SwitchBody) and pick.body.branches == (("shorten",), ("keep",))
    assert isinstance(shorten.body, CodeBody) and shorten.trigger_rule == TriggerRule.ALL_SUCCESS
    assert isinstance(sub.body, FlowBody) and sub.body.flow == "other-flow"
    assert sub.trigger_rule == TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
    assert definition.output == StepOutput("sub")
    assert definition.batches == {"slow": 1} and definition.max_concurrent == 3
    assert definition.caps.cost == 0.5
    assert definition.schedule is not None and definition.schedule.overlap == Overlap.BUFFER_ONE
    assert definition.schedule.timezone == "Europe/Paris" and definition.schedule.catchup_seconds == 120
    with pytest.raises(AttributeError):
        definition.name = "changed"  # type: ignore[misc]


def test_a_branch_waits_for_its_switch_even_when_its_deps_do_not_say_so() -> None:
    graph = load(GOOD).graph
    assert graph.upstream["shorten"] == ("pick",)
    assert graph.upstream["sub"] == ("shorten", "keep")
    assert graph.order == ("gather", "pick", "shorten", "keep", "sub")


def test_output_is_a_step_id_or_a_template() -> None:
    template = GOOD.replace("output: sub", 'output: "# Notes\\n{{ steps.sub.result }}"')
    assert load(template).output == TemplateOutput("# Notes\n{{ steps.sub.result }}")


def test_json_is_read_like_yaml_with_lines() -> None:
    text = json.dumps({"name": "j", "steps": [
        {"id": "a", "kind": "code", "code": "1"},
        {"id": "b", "kind": "code", "code": "2", "deps": ["a", "nope"]}]}, indent=2)
    problems = validate(text)
    assert ([(problem.step, problem.line) for problem in problems]
            == [("b", text.splitlines().index('        "nope"') + 1)])
    assert load(text.replace('"nope"', '"a"').replace('"a",\n        "a"', '"a"')).steps[1].deps == ("a",)


def one(problems: list[Problem], fragment: str) -> Problem:
    matching = [problem for problem in problems if fragment in problem.message]
    assert len(matching) == 1, f"expected one problem saying {fragment!r}, got {[str(p) for p in problems]}"
    return matching[0]


BAD = [
    ("unknown dependency", """
        name: t
        steps:
          - id: a
            kind: code
            code: "1"
            deps: [ghost]
     """, "a", 6, "deps names 'ghost', which is no step"),
    ("cycle", """
        name: t
        steps:
          - id: a
            kind: code
            code: "1"
            deps: [b]
          - id: b
            kind: code
            code: "2"
            deps: [a]
     """, "a", 3, "cycle: a -> b -> a"),
    ("cycle through a switch branch", """
        name: t
        steps:
          - id: s
            kind: switch
            deps: [x]
            cases: [{when: "true", then: [x]}]
          - id: x
            kind: code
            code: "1"
     """, "s", 3, "cycle: s -> x -> s"),
    ("duplicate id", """
        name: t
        steps:
          - id: a
            kind: code
            code: "1"
          - id: a
            kind: code
            code: "2"
     """, "a", 6, "duplicate step id 'a'"),
    ("unreachable", """
        name: t
        steps:
          - id: a
            kind: code
            code: "1"
            deps: [a]
          - id: b
            kind: code
            code: "2"
            deps: [a]
     """, "b", 7, "unreachable: this step can never run, it waits for 'a'"),
    ("switch case naming a missing step", """
        name: t
        steps:
          - id: s
            kind: switch
            cases:
              - when: "input.x > 1"
                then: [missing]
     """, "s", 7, "the switch branch names 'missing'"),
    ("switch default naming a missing step", """
        name: t
        steps:
          - id: s
            kind: switch
            cases: [{when: "true", then: []}]
            default: [elsewhere]
     """, "s", 6, "the switch branch names 'elsewhere'"),
    ("bad guard expression", """
        name: t
        steps:
          - id: a
            kind: code
            code: "1"
            when: "input.x > (1"
     """, "a", 6, "when: '(' is never closed"),
    ("a statement as a guard", """
        name: t
        steps:
          - id: a
            kind: code
            code: "1"
            when: "if (input.x) true"
     """, "a", 6, "'if' is a statement"),
    ("bad case expression on its own line of a block", """
        name: t
        steps:
          - id: s
            kind: switch
            cases:
              - when: |
                  input.x &&
                  'unclosed
                then: []
     """, "s", 8, "case 1: unterminated string"),
    ("bad code", """
        name: t
        steps:
          - id: c
            kind: code
            code: |
              const x = [1, 2;
              return x;
     """, "c", 6, "code: '[' is never closed"),
    ("clock in code", """
        name: t
        steps:
          - id: c
            kind: code
            code: |
              const started = 1;
              return Date.now() - started;
     """, "c", 7, "Date.now() is not allowed"),
    ("bad cron", """
        name: t
        schedule: {cron: "0 25 * * *"}
        steps:
          - {id: a, kind: code, code: "1"}
     """, None, 2, "hour: 25 is outside 0-23"),
    ("cron with four fields", """
        name: t
        schedule:
          cron: "0 * * *"
        steps:
          - {id: a, kind: code, code: "1"}
     """, None, 3, "a cron expression has 5 fields"),
    ("cron that never fires", """
        name: t
        schedule:
          cron: "0 0 31 2 *"
        steps:
          - {id: a, kind: code, code: "1"}
     """, None, 3, "never fires"),
    ("bad time zone", """
        name: t
        schedule:
          cron: "@daily"
          timezone: Europe/Atlantis
        steps:
          - {id: a, kind: code, code: "1"}
     """, None, 4, "unknown time zone 'Europe/Atlantis'"),
    ("undeclared batch", """
        name: t
        batches: {io: {max_concurrent: 2}}
        steps:
          - id: a
            kind: code
            code: "1"
            batch: cpu
     """, "a", 7, "batch 'cpu' is not declared under `batches` (declared: io)"),
    ("prompt naming a step that is not upstream", """
        name: t
        steps:
          - id: a
            kind: agent
            prompt: "Summarise {{ steps.b.result }}"
          - id: b
            kind: code
            code: "1"
     """, "a", 5, "refers to steps.b, which is not upstream of 'a'"),
    ("code naming a step that does not exist", """
        name: t
        steps:
          - id: a
            kind: code
            code: "steps.nothere.result + 1"
     """, "a", 5, "refers to steps.nothere, which is no step"),
    ("a bad placeholder", """
        name: t
        steps:
          - id: a
            kind: agent
            prompt: "Hello {{ steps.a }}"
     """, "a", 5, "say which part of the step"),
    ("a misspelt key", """
        name: t
        steps:
          - id: a
            kind: agent
            prompt: "Hello"
            promt: "Hello"
     """, "a", 6, "'promt' was unexpected"),
    ("a missing prompt", """
        name: t
        steps:
          - id: a
            kind: agent
     """, "a", 3, "'prompt' is a required property"),
    ("an unknown trigger rule", """
        name: t
        steps:
          - id: a
            kind: code
            code: "1"
            trigger_rule: any_success
     """, "a", 6, "'any_success' is not one of"),
    ("retries below one attempt", """
        name: t
        steps:
          - id: a
            kind: code
            code: "1"
            retries: {max_attempts: 0}
     """, "a", 6, "0 is less than the minimum of 1"),
    ("output naming no step", """
        name: t
        steps:
          - {id: a, kind: code, code: "1"}
        output: b
     """, None, 4, "output 'b' names no step and is not a template"),
    ("a flow running itself", """
        name: t
        steps:
          - id: again
            kind: flow
            flow: t
     """, "again", 5, "a flow cannot run itself"),
    ("an invalid output schema", """
        name: t
        steps:
          - id: a
            kind: agent
            prompt: "x"
            schema: {type: 12}
     """, "a", 6, "is not a valid JSON Schema"),
    ("YAML that does not parse", """
        name: t
        steps:
          - id: a
            kind: code
           code: "1"
     """, None, 5, "not valid YAML or JSON"),
    ("a key given twice", """
        name: t
        steps:
          - id: a
            kind: code
            code: "1"
            code: "2"
     """, None, 6, "the key 'code' appears twice"),
]


@pytest.mark.parametrize(("text", "step", "line", "fragment"), [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_each_bad_definition_is_refused_with_its_step_and_line(text: str, step: str | None, line: int,
                                                                 fragment: str) -> None:
    problem = one(validate(flow(text)), fragment)
    assert (problem.step, problem.line) == (step, line), str(problem)
    with pytest.raises(FlowDefinitionError) as refused:
        load(flow(text))
    assert problem in refused.value.problems


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    text = flow("""
        name: Bad Name
        schedule: {cron: "every day"}
        steps:
          - id: a
            kind: code
            code: "(1"
          - id: b
            kind: agent
            prompt: "{{ steps.c.result }}"
            deps: [a, zzz]
          - id: c
            kind: switch
            deps: [b]
            cases: [{when: "x;y", then: [nowhere]}]
          - id: a
            kind: code
            code: "1"
    """)
    problems = validate(text)
    fragments = ["does not match", "cron", "'(' is never closed", "deps names 'zzz'", "not upstream of 'b'",
                 "';' separates statements", "names 'nowhere'", "duplicate step id 'a'"]
    for fragment in fragments:
        one(problems, fragment)
    assert [problem.line for problem in problems] == sorted(problem.line or 0 for problem in problems)
    assert str(one(problems, "deps names 'zzz'")) .startswith("line 10, step 'b': ")


def test_aliases_that_expand_too_far_or_contain_themselves_are_refused_not_expanded() -> None:
    laughs = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9))
    for text in (laughs, "a: &a [*a]\n"):
        (problem,) = validate(text)
        assert "expands to over 100,000 values" in problem.message


def test_an_empty_definition_says_so() -> None:
    assert [problem.message for problem in validate("")] == ["the definition is empty"]
    assert "is not of type 'object'" in validate("- just\n- a list\n")[0].message


def test_a_long_chain_validates_and_orders_and_a_long_cycle_is_named() -> None:
    steps = "\n".join(f"  - {{id: s{i}, kind: code, code: '1', deps: [s{i - 1}]}}" for i in range(1, 200))
    chain = f"name: long\nsteps:\n  - {{id: s0, kind: code, code: '1'}}\n{steps}\n"
    assert load(chain).graph.order[-1] == "s199"
    cyclic = chain.replace("{id: s0, kind: code, code: '1'}", "{id: s0, kind: code, code: '1', deps: [s199]}")
    assert "cycle: s0 -> s199 -> s198" in one(validate(cyclic), "cycle").message


def test_graph_checks_need_no_recursion_on_a_thousand_steps() -> None:
    upstream = {f"s{i}": (f"s{(i - 1) % 1000}",) for i in range(1000)}
    order = [f"s{i}" for i in range(1000)]
    (cycle,) = find_cycles(upstream, order)
    assert len(cycle) == 1000 and cycle[:3] == ["s0", "s999", "s998"]
    downstream = {step: tuple(other for other, ups in upstream.items() if step in ups) for step in order}
    assert len(never_runs(downstream, {"s500": "on a cycle"}, order)) == 999


@pytest.mark.parametrize(("attempt", "delay"), [(1, 10.0), (2, 20.0), (3, 40.0), (4, 60.0), (9, 60.0)])
def test_retry_backoff_grows_by_the_factor_up_to_the_maximum(attempt: int, delay: float) -> None:
    assert Retries(max_attempts=9, backoff_seconds=10, backoff_factor=2, max_backoff_seconds=60).delay(attempt) == delay


EXPRESSIONS = [
    ("steps.a.result.severity === 'high'", []),
    ("xs.map(x => { if (x) return 1; return 2 })", []),
    ("`total: ${steps.a.result.n + 1}`", []),
    ("/a(b/.test(input.s) && input.n / 2 > 1", []),
    ("'a ) quoted bracket' !== input.x // comment (", []),
    ("return 1", ["'return' is a statement"]),
    ("a; b", ["';' separates statements"]),
    ("(a", ["'(' is never closed"]),
    ("a)", ["unmatched ')'"]),
    ("[a)", ["')' closes '[' (expected ']')"]),
    ("'abc", ["unterminated string"]),
    ("`abc ${x`", ["unterminated template literal", "'${' is never closed"]),
    ("Math.random() > 0.5", ["Math.random() is not allowed"]),
    ("   ", ["the expression is empty"]),
]


@pytest.mark.parametrize(("text", "expected"), EXPRESSIONS)
def test_expression_checks(text: str, expected: list[str]) -> None:
    messages = [message for _, message in expressions.check_expression(text)]
    assert len(messages) == len(expected), messages
    for message, fragment in zip(messages, expected):
        assert fragment in message


def test_code_may_be_a_function_body_and_references_are_found_outside_strings() -> None:
    assert expressions.check_code("const x = steps.a.result;\nreturn x.filter(y => y > 1);") == []
    source = "steps.a.result + steps['b'].result + steps?.c + 'steps.d' + `${steps.e.state}` // steps.f"
    assert expressions.references(source) == {"a", "b", "c", "e"}


def test_templates_render_strings_verbatim_values_as_json_and_missing_values_as_nothing() -> None:
    steps = {"a": {"state": "completed", "result": {"items": ["x", "y"], "n": 2}}, "b": {"state": "excluded"}}
    rendered = expressions.render_template(
        "{{ input.who }}: {{ steps.a.result.items[1] }} / {{steps.a.result.n}} / [{{ steps.b.result }}] / "
        "{{ steps.a.result.items }}", {"who": "Bo"}, steps)
    assert rendered == 'Bo: y / 2 / [] / [\n  "x",\n  "y"\n]'


FLOWS_MODULES = sorted((PACKAGE).glob("*.py"))


@pytest.mark.parametrize("path", FLOWS_MODULES, ids=lambda path: path.name)
def test_every_flows_function_is_short_and_documented_module(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{path.name} opens with what it owns"
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 >= 60]
    assert long == []
