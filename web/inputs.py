"""What the edge accepts: every JSON body, query string and path value is checked here before any
view, schema or database sees it.

    body bytes --UTF-8--> text --json.loads (no NaN/Infinity)--> value     else 400 invalid_json
    walk value iteratively:
        deeper than MAX_DEPTH levels                                     -> 400 too_deeply_nested
        a string or key holding NUL (U+0000) or a lone surrogate         -> 422 validation_failed
        an integer outside Postgres' bigint range, a float not finite    -> 422 validation_failed
    query names and values, path values: the same string rule           -> 422 validation_failed

Postgres stores neither NUL in `text`/`jsonb` nor lone surrogates (they are not UTF-8), and its
widest integer is a bigint; a value the database would refuse is refused here instead, so bad input
is a 4xx that changes nothing, never a database error. Routes declare narrower ranges in their
JSON Schemas (`web/schemas.py`); this is the floor under all of them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable, Mapping

from web.errors import HttpError

MAX_DEPTH = 64
BIGINT_MIN, BIGINT_MAX = -(2 ** 63), 2 ** 63 - 1
INTEGER_MAX = 2 ** 31 - 1  # Postgres `integer`, for schema fields stored in one
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
MAX_PROBLEMS = 20


def parse_json_body(raw: bytes) -> Any:
    """The request body as a checked JSON value."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "invalid_json", "the request body is not UTF-8 text; send JSON encoded as UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise _too_deep() from None
    except ValueError:
        raise HttpError(400, "invalid_json", "the request body is not valid JSON") from None
    check_value(value, "body")
    return value


def check_value(value: Any, where: str) -> None:
    """Raise the edge's error for the first problems in `value` (see the module docstring)."""
    problems: list[dict[str, str]] = []
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack and len(problems) < MAX_PROBLEMS:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _too_deep()
        if isinstance(item, str):
            _check_text(item, path or where, problems)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not BIGINT_MIN <= item <= BIGINT_MAX:
                problems.append({"path": path or where,
                                 "message": f"integers must lie between {BIGINT_MIN} and {BIGINT_MAX}"})
        elif isinstance(item, float):
            if not math.isfinite(item):
                problems.append({"path": path or where, "message": "numbers must be finite"})
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{path}/{key}" if path else str(key)
                _check_text(key, f"{child_path} (the name)", problems)
                stack.append((child, child_path, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{path}/{index}" if path else str(index), depth + 1)
                         for index, child in enumerate(item))
    _raise(problems, where)


def check_query(args: Iterable[tuple[str, list[str]]]) -> None:
    problems: list[dict[str, str]] = []
    for name, values in args:
        _check_text(name, f"{name} (the name)", problems)
        for raw in values:
            _check_text(raw, name, problems)
    _raise(problems, "query")


def check_path(values: Mapping[str, Any]) -> None:
    problems: list[dict[str, str]] = []
    for name, raw in values.items():
        if isinstance(raw, str):
            _check_text(raw, name, problems)
    _raise(problems, "path")


def _check_text(text: str, path: str, problems: list[dict[str, str]]) -> None:
    found = UNSTORABLE.search(text)
    if found is None:
        return
    what = "a NUL character (U+0000)" if found.group() == "\x00" else "a lone surrogate (not valid Unicode)"
    problems.append({"path": path, "message": f"contains {what}, which cannot be stored; remove it"})


def _raise(problems: list[dict[str, str]], where: str) -> None:
    if problems:
        raise HttpError(422, "validation_failed", f"the request {where} is invalid: {problems[0]['path']} "
                        f"{problems[0]['message']}", problems[:MAX_PROBLEMS])


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _too_deep() -> HttpError:
    return HttpError(400, "too_deeply_nested", f"the request body nests more than {MAX_DEPTH} levels deep; "
                     "flatten it")
