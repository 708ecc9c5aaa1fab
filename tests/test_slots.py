"""The subagent slot policy, table-driven (orchestrator/domain/slots.py); the queries that apply it
are tested through real workers in tests/test_subagents.py."""

from __future__ import annotations

import pytest

from orchestrator.domain.slots import InUse, Limits, choose, may_admit

LIMITS = Limits(server=3, per_user=2)


@pytest.mark.parametrize(("total", "per_user", "user", "expected"), [
    (0, {}, "a", True),
    (2, {"a": 1, "b": 1}, "a", True),
    (2, {"a": 2}, "a", False),          # the user holds all of theirs
    (2, {"a": 2}, "b", True),
    (3, {"a": 1, "b": 2}, "a", False),  # the server is full
    (3, {"b": 3}, "c", False),
])
def test_may_admit(total: int, per_user: dict[str, int], user: str, expected: bool) -> None:
    assert may_admit(LIMITS, InUse(total, per_user), user) is expected


@pytest.mark.parametrize(("total", "per_user", "queue", "expected"), [
    (0, {}, [("1", "a"), ("2", "a"), ("3", "a"), ("4", "b")], ["1", "2", "4"]),  # a's third waits for b
    (2, {"a": 2}, [("1", "a"), ("2", "b"), ("3", "b")], ["2"]),                  # one free slot
    (3, {"a": 3}, [("1", "b")], []),                                              # none free
    (1, {"a": 1}, [("1", "a"), ("2", "a"), ("3", "c")], ["1", "3"]),             # oldest first within limits
    (0, {}, [], []),
])
def test_choose(total: int, per_user: dict[str, int], queue: list[tuple[str, str]], expected: list[str]) -> None:
    assert choose(LIMITS, InUse(total, per_user), queue) == expected


def test_choose_does_not_change_what_it_is_given() -> None:
    in_use = InUse(0, {"a": 1})
    choose(LIMITS, in_use, [("1", "a")])
    assert in_use.per_user == {"a": 1}
