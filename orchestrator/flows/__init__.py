"""Flows: declarative DAGs of agent, code, switch and flow steps (docs/flows.md).

Everything in this package is pure (no database, no Celery, no JavaScript); a run kind applies it.

    definition.py   YAML/JSON text -> every Problem with its step and line, or a frozen FlowDefinition
    schema.json     the published JSON Schema of a flow file (draft 2020-12)
    checks.py       what the schema cannot say: ids, deps, switch branches, cycles, unreachable steps,
                    references in expressions and templates, cron, output
    graph.py        effective dependencies (a branch waits for its switch), stable topological order
    expressions.py  syntax checks for guards and code without running them; {{ }} templates
    cron.py         five-field cron in a time zone (DST-correct), overlap policies, catch-up
    rules.py        step states and trigger rules: evaluate(rule, upstream states)
    records.py      step records, attempt numbers and the retry budget
    scheduler.py    plan(definition, records, now, guard_values) -> Plan, and the run's outcome
    operations.py   accept_result (fencing), reconcile (after a crash), rerun_from, cancel
    catalog/        built-in flows
"""
