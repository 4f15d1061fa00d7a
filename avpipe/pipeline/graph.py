"""The stage graph as data: who reads whom, in which order stages run.

Works on a plain ``name -> requires`` mapping so that it needs no stage class and no registry
(the registry passes its view in). The one rule that makes ``probe`` special lives here:
every stage other than probe reads probe (its frame time base), so probe comes first.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from graphlib import CycleError, TopologicalSorter

from avpipe.pipeline.types import PROBE

Requires = Mapping[str, Iterable[str]]


def upstream_names(name: str, requires: Iterable[str]) -> tuple[str, ...]:
    """The stages whose fingerprints enter ``name``'s (sorted): its ``requires`` plus probe."""
    ups = set(requires)
    if name != PROBE:
        ups.add(PROBE)
    return tuple(sorted(ups))


def closure(graph: Requires, names: Iterable[str]) -> set[str]:
    """``names`` and every stage they read, transitively. Unknown names raise KeyError."""
    wanted: set[str] = set()
    todo = list(names)
    while todo:
        n = todo.pop()
        if n in wanted:
            continue
        if n not in graph:
            raise KeyError(f"unknown stage {n!r}; known stages: {', '.join(sorted(graph))}")
        wanted.add(n)
        todo.extend(upstream_names(n, graph[n]))
    return wanted


def topological_order(graph: Requires, names: Iterable[str] | None = None) -> list[str]:
    """Stages in dependency order (with ``names``: those plus everything they read).

    graphlib gives the order and finds cycles; within one level names are sorted, so the order
    is deterministic (probe first, always).
    """
    wanted = closure(graph, graph if names is None else names)
    ts: TopologicalSorter[str] = TopologicalSorter(
        {n: [u for u in upstream_names(n, graph[n])] for n in wanted})
    try:
        ts.prepare()
    except CycleError as e:
        raise ValueError(f"stage graph has a cycle: {' -> '.join(e.args[1])}") from e
    order: list[str] = []
    while ts.is_active():
        ready = sorted(ts.get_ready())
        order.extend(ready)
        ts.done(*ready)
    return order


def dependents(graph: Requires, name: str) -> list[str]:
    """Every stage that reads ``name`` directly or transitively, in dependency order."""
    out: set[str] = set()
    for n in topological_order(graph):
        if n != name and set(upstream_names(n, graph[n])) & (out | {name}):
            out.add(n)
    return [n for n in topological_order(graph) if n in out]
