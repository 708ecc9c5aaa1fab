"""Guard rails on the shape of the code that run with the tests (issue 15): no function in the core,
the web front end or the worker grows past 60 lines; split it where it does one thing after another."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIMIT = 60


def test_no_function_is_longer_than_sixty_lines() -> None:
    long = []
    for package in ("orchestrator", "web", "worker"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length >= LIMIT:
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, "functions of 60 lines or more:\n" + "\n".join(long)
