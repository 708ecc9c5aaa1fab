"""The step graph of a flow: effective dependencies, a stable topological order, cycles, reach.

Edges point from a step to what it waits for. "Effective" dependencies are the declared `deps` plus,
for a step named in a switch branch, that switch: a branch cannot start before its switch chose.
Ties in the order are broken by position in the file, so every decision list built by walking
`order` is the same on every worker and every replay.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Graph:
    upstream: Mapping[str, tuple[str, ...]]
    downstream: Mapping[str, tuple[str, ...]]
    order: tuple[str, ...]

    @classmethod
    def build(cls, steps: Sequence[tuple[str, Iterable[str]]],
              switch_targets: Mapping[str, Iterable[str]]) -> Graph:
        """From (id, declared deps) in file order; deps naming no step are left out (validation reports them)."""
        known = {step_id for step_id, _ in steps}
        upstream: dict[str, list[str]] = {step_id: [] for step_id, _ in steps}
        for step_id, deps in steps:
            upstream[step_id].extend(dep for dep in deps if dep in known)
        for switch, targets in switch_targets.items():
            for target in targets:
                if target in upstream and switch not in upstream[target]:
                    upstream[target].append(switch)
        downstream: dict[str, list[str]] = {step_id: [] for step_id in upstream}
        for step_id, deps in upstream.items():
            for dep in dict.fromkeys(deps):
                downstream[dep].append(step_id)
        frozen_up = {step_id: tuple(dict.fromkeys(deps)) for step_id, deps in upstream.items()}
        order = _topological([step_id for step_id, _ in steps], frozen_up, downstream)
        return cls(frozen_up, {step_id: tuple(down) for step_id, down in downstream.items()}, order)

    @property
    def position(self) -> dict[str, int]:
        return {step_id: index for index, step_id in enumerate(self.order)}

    def ancestors(self, step_id: str) -> frozenset[str]:
        """Everything `step_id` waits for, directly or not (never itself unless in a cycle)."""
        return _reach(self.upstream, [step_id])

    def descendants(self, step_id: str) -> frozenset[str]:
        """Everything that waits for `step_id`, directly or not."""
        return _reach(self.downstream, [step_id])


def _reach(edges: Mapping[str, Sequence[str]], starts: Iterable[str]) -> frozenset[str]:
    seen: set[str] = set()
    stack = [next_step for start in starts for next_step in edges.get(start, ())]
    while stack:
        step_id = stack.pop()
        if step_id not in seen:
            seen.add(step_id)
            stack.extend(edges.get(step_id, ()))
    return frozenset(seen)


def _topological(file_order: list[str], upstream: Mapping[str, Sequence[str]],
                 downstream: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """Kahn's algorithm, smallest file position first; steps on a cycle go last, in file order."""
    position = {step_id: index for index, step_id in enumerate(file_order)}
    waiting = {step_id: len(upstream[step_id]) for step_id in file_order}
    heap = [position[step_id] for step_id in file_order if waiting[step_id] == 0]
    heapq.heapify(heap)
    order: list[str] = []
    while heap:
        step_id = file_order[heapq.heappop(heap)]
        order.append(step_id)
        for dependent in downstream[step_id]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(heap, position[dependent])
    placed = set(order)
    return tuple(order + [step_id for step_id in file_order if step_id not in placed])


def find_cycles(upstream: Mapping[str, Sequence[str]], file_order: Sequence[str]) -> list[list[str]]:
    """One cycle per strongly connected component that has one, as [a, b, …]: a waits for b …, the
    last waits for a. Iterative Tarjan, so a 1,000-step chain does not hit the recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in file_order:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            edges = upstream.get(node, ())
            if child < len(edges):
                work.append((node, child + 1))
                target = edges[child]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return [_cycle_in(component, upstream, file_order) for component in components
            if len(component) > 1 or component[0] in upstream.get(component[0], ())]


def _cycle_in(component: list[str], upstream: Mapping[str, Sequence[str]], file_order: Sequence[str]) -> list[str]:
    """A shortest cycle through the component's first step in file order (breadth first)."""
    members = set(component)
    position = {step_id: index for index, step_id in enumerate(file_order)}
    start = min(component, key=position.__getitem__)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        next_frontier = []
        for node in frontier:
            for target in upstream.get(node, ()):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return list(reversed(path))
                if target in members and target not in previous:
                    previous[target] = node
                    next_frontier.append(target)
        frontier = next_frontier
    return [start]


def never_runs(downstream: Mapping[str, Sequence[str]], broken: Mapping[str, str],
               file_order: Sequence[str]) -> dict[str, str]:
    """Steps that wait, directly or not, for a broken step (missing dep, cycle), each with the broken
    step it waits for first in file order. The broken steps themselves are not listed."""
    found: dict[str, str] = {}
    position = {step_id: index for index, step_id in enumerate(file_order)}
    for origin in sorted(broken, key=position.__getitem__):
        for step_id in _reach(downstream, [origin]):
            if step_id not in broken and step_id not in found:
                found[step_id] = origin
    return found
