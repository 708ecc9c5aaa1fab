"""Values Postgres can hold: the column types every text and JSON column is declared with.

Postgres refuses NUL (U+0000) in `text` and `jsonb`, and psycopg cannot encode a lone surrogate
as UTF-8. Tool output, tool arguments, file contents and model replies are untrusted and may hold
either, and a refused write would fail the run with a database error. So every string bound to a
text or JSON column (dictionary keys included) passes through `storable()` on its way in:

    NUL             -> the six visible characters `\\u0000`   (a reader sees that a NUL was there)
    lone surrogate  -> U+FFFD, the Unicode replacement character

The escape is visible rather than U+FFFD so a person or a model reading a tool result can tell a
NUL byte from a character that did not decode. The change is one-way and idempotent (its output
holds neither character), so re-storing a value read back is a no-op. The web edge refuses both in
requests (`web/inputs.py`); this is for what the agent and its tools produce.

Writers that also publish what they wrote (events, messages) apply `storable()` themselves first,
so the published copy equals the stored one; the column types guarantee it for every other write.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from sqlalchemy import String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

NUL_ESCAPE = "\\u0000"
REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: Any) -> Any:
    """`value` with every string made storable; the same object when nothing needed changing."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        cleaned: dict[Any, Any] = {}
        changed = False
        for key, item in value.items():
            new_key = storable_text(key) if isinstance(key, str) else key
            new_item = storable(item)
            changed = changed or new_key is not key or new_item is not item
            cleaned[new_key] = new_item
        return cleaned if changed else value
    if isinstance(value, (list, tuple)):
        items = [storable(item) for item in value]
        return items if any(new is not old for new, old in zip(items, value)) else value
    return value


def storable_text(text: str) -> str:
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(lambda found: NUL_ESCAPE if found.group() == "\x00" else REPLACEMENT, text)


class StorableJSONB(TypeDecorator[Any]):
    """`jsonb` whose bound values are made storable. None is stored as JSON null, as with JSONB."""

    impl = JSONB
    cache_ok = True
    should_evaluate_none = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return storable(value)


class StorableText(TypeDecorator[str]):
    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return storable_text(value) if isinstance(value, str) else value


class StorableString(TypeDecorator[str]):
    """`varchar(n)`; an escaped NUL is longer than the NUL, so a value at the limit may still not fit."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return storable_text(value) if isinstance(value, str) else value


class StatusColumn(TypeDecorator[StrEnum]):
    """A status column typed by its enum: `varchar(n)` in Postgres, an enum member in Python. Writing a
    value the enum does not know fails at once (ValueError) instead of storing a typo; reading gives the
    member, which compares equal to its string, so `run.status == RunStatus.QUEUED` needs no `.value`."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[StrEnum], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else self.enum(value)
