"""`boocode trace SESSION|RUN`: the span tree with timings, tokens, cost and cache status."""

from __future__ import annotations

from typing import Any

import click

from orchestrator.cli import EXIT_NOT_FOUND, output
from orchestrator.cli.client import ApiClient, CliError
from orchestrator.cli.context import Context, json_option, pass_context


@click.command()
@click.argument("identifier")
@json_option
@pass_context
def trace(context: Context, identifier: str, as_json: bool) -> None:
    """The span tree of a RUN or a SESSION: timings, tokens, cost, cache status."""
    kind, found, summary = fetch_spans(context.api(), identifier)
    output.emit({"kind": kind[:-1], "spans": found, "summary": summary}, as_json,
                lambda shown: print_tree(shown["spans"], shown["summary"]))


def fetch_spans(api: ApiClient, identifier: str) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """Try `identifier` as a run, then as a session; page through every span."""
    for kind in ("runs", "sessions"):
        try:
            summary = api.get(f"/api/{kind}/{identifier}/trace-summary")["summary"]
        except CliError as error:
            if error.exit_code == EXIT_NOT_FOUND and kind == "runs":  # not a run: try it as a session
                continue
            raise
        found: list[dict[str, Any]] = []
        cursor = 0
        while True:
            page = api.get(f"/api/{kind}/{identifier}/spans", cursor=cursor, limit=200)
            found.extend(page["spans"])
            if page["next_cursor"] is None:
                return kind, found, summary
            cursor = page["next_cursor"]
    raise AssertionError("unreachable")


def _tokens(usage: dict[str, Any]) -> str:
    return (f"in {usage.get('input_total', 0):,} (cached {usage.get('cache_read', 0):,}) "
            f"out {usage.get('output', 0):,}")


def describe(span: dict[str, Any]) -> str:
    duration = f"{span['duration_ms'] / 1000:.2f}s" if span["duration_ms"] is not None else "running…"
    line = f"{span['kind']:<10} {span['name']:<20} {span['status']:<11} {duration:>9}"
    attributes = span["attributes"]
    if span["kind"] == "model_call" and "usage" in attributes:
        cache = attributes.get("cache") or {}
        ttft = attributes.get("time_to_first_token_ms")
        line += f"  ttft {ttft:.0f}ms" if ttft is not None else ""
        line += f"  {_tokens(attributes['usage'])}  ${attributes['cost']['total']:.6f}"
        line += f"  cache {cache.get('status')}" + (f" ({cache['detail']})" if cache.get("detail") else "")
    if attributes.get("error"):
        line += f"  error: {attributes['error'].get('message')}"
    return line


def print_tree(found: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    children: dict[str | None, list[dict[str, Any]]] = {}
    ids = {span["id"] for span in found}
    for span in found:
        parent = span["parent_id"] if span["parent_id"] in ids else None
        children.setdefault(parent, []).append(span)

    def walk(parent: str | None, depth: int) -> None:
        for span in children.get(parent, []):
            click.echo("  " * depth + describe(span))
            walk(span["id"], depth + 1)

    walk(None, 0)
    rate = summary["cache_hit_rate"]
    click.echo(f"\n{summary['model_calls']} model calls, {summary['tool_calls']} tool calls, "
               f"{summary['errors']} errors; "
               f"{_tokens(summary['tokens'])}; cost ${summary['cost']['total']:.6f} "
               f"(saved ${summary['cost']['saved']:.6f} by caching); "
               f"cache hit rate {'-' if rate is None else f'{rate:.0%}'}")
