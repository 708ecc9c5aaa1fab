"""Who may hold a background subagent slot: the admission policy, apart from the queries and locks that
apply it (orchestrator/store/subagents.py). Pure, so it is tested table-driven.

    Limits(server, per_user)      at most `server` subagents hold slots at once, `per_user` per user
    may_admit(limits, in_use, u)  a subagent of user u may take a slot now
    choose(limits, in_use, queue) who gets the slots that are free: oldest first, skipping anyone whose
                                  user holds all of theirs, until the free slots are handed out
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

Candidate = TypeVar("Candidate")


@dataclass(frozen=True)
class Limits:
    server: int
    per_user: int


@dataclass(frozen=True)
class InUse:
    """Slots held now, in all and per user."""

    total: int
    per_user: Mapping[Any, int]  # user id -> slots held

    def of(self, user: Hashable) -> int:
        return self.per_user.get(user, 0)


def may_admit(limits: Limits, in_use: InUse, user: Hashable) -> bool:
    return in_use.total < limits.server and in_use.of(user) < limits.per_user


def choose(limits: Limits, in_use: InUse, queue: Iterable[tuple[Candidate, Hashable]]) -> list[Candidate]:
    """The candidates (in queue order, each with its user) to wake for the free slots."""
    free = limits.server - in_use.total
    held = dict(in_use.per_user)
    chosen: list[Candidate] = []
    for candidate, user in queue:
        if len(chosen) >= free:
            break
        if held.get(user, 0) < limits.per_user:
            chosen.append(candidate)
            held[user] = held.get(user, 0) + 1
    return chosen
