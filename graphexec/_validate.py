"""The structural checks ``GraphBuilder.build()`` runs; every problem is reported at once."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from . import reducers as _reducers
from ._spec import Declarations, NodeSpec, Validated
from ._state import StateSpec
from ._values import name_problem
from .exceptions import InvalidGraph

__all__ = ("validate",)


def validate(b: Declarations) -> Validated:
    """Check the builder's declarations; return the checked parts or raise InvalidGraph."""
    problems = list(b._problems)
    name = b.name

    # Names become store keys and log fields: refuse unusable ones first (the checks below
    # sort and compare names, which an int among strs would break).
    named = [name_problem("graph name", name)]
    named += [name_problem("node name", n) for n, _ in b._nodes]
    if any(named):
        bad = [p for p in named if p is not None]
        summary = "\n".join(f"- {p}" for p in bad)
        raise InvalidGraph(f"graph {name!r:.80} is invalid:\n{summary}", problems=bad)

    counts = Counter(n for n, _ in b._nodes)
    for node, c in counts.items():
        if c > 1:
            problems.append(f"duplicate node name {node!r} (declared {c} times)")
    nodes: dict[str, NodeSpec] = {}
    for n, spec in b._nodes:
        if spec is not None and n not in nodes:
            nodes[n] = spec
    known = {n for n, _ in b._nodes}

    # start and end
    start: str | None = None
    if not b._start:
        problems.append("no start node: call .start(name)")
    elif len(set(b._start)) > 1:
        problems.append(f"more than one start node: {', '.join(map(repr, b._start))}")
    else:
        start = b._start[0]
        if start not in known:
            problems.append(f"start node {start!r} is not a node of the graph")
    ends = frozenset(b._ends)
    if not ends:
        problems.append("no end node: call .end(name, ...)")
    for missing in sorted(ends - known):
        problems.append(f"end node {missing!r} is not a node of the graph")

    # edges
    seen_edges: set[tuple[str, str, str, Any]] = set()
    for e in b._edges:
        for role, endpoint in (("source", e.source), ("target", e.target)):
            if endpoint not in known:
                problems.append(f"edge {e.label}: unknown {role} node {endpoint!r}")
        ident = (e.source, e.target, e.kind, e.when)
        if ident in seen_edges:
            problems.append(f"edge {e.label} is declared twice")
        seen_edges.add(ident)
    for node in known:
        normal = [e for e in b._edges if e.source == node and e.kind == "normal"]
        if len(normal) > 1:
            targets = ", ".join(repr(e.target) for e in normal)
            problems.append(
                f"node {node!r} has {len(normal)} normal edges (to {targets}); at most one "
                "unconditional edge may leave a node: give the others when= conditions"
            )
        fallbacks = [e for e in b._edges if e.source == node and e.kind == "fallback"]
        if len(fallbacks) > 1:
            problems.append(f"node {node!r} has more than one fallback edge")
    for node in sorted(ends & known):
        # A fallback edge may leave an end node: it is taken only when the node returns
        # gx.Fallback (DESIGN's own example: .fallback("refund", "decline") with refund an end).
        out = [e.label for e in b._edges if e.source == node and e.kind != "fallback"]
        if out:
            problems.append(
                f"end node {node!r} has outgoing edges ({'; '.join(out)}); "
                "an end node finishes the run after it executes"
            )

    # reachability, both ways
    succ: dict[str, set[str]] = {n: set() for n in known}
    pred: dict[str, set[str]] = {n: set() for n in known}
    for e in b._edges:
        if e.source in known and e.target in known:
            succ[e.source].add(e.target)
            pred[e.target].add(e.source)
    if start in known:
        reached = _closure({start}, succ)
        for n in sorted(known - reached):
            problems.append(f"node {n!r} is unreachable from the start node {start!r}")
    if ends & known:
        can_end = _closure(set(ends & known), pred)
        for n in sorted(known - can_end):
            problems.append(f"node {n!r} has no path to an end node")

    # state and reducers
    state_type = b.state
    reducers = dict(b._reducers)
    if state_type is not None:
        if not (isinstance(state_type, type) and issubclass(state_type, msgspec.Struct)):
            problems.append(f"state= must be a msgspec.Struct subclass, got {state_type!r}")
            state_type = None
        else:
            fields = {f.name for f in msgspec.structs.fields(state_type)}
            declared = StateSpec.reducers_from_type(state_type)
            for key in sorted(set(reducers) - fields):
                problems.append(f"reducer for key {key!r}: {state_type.__name__} has no such field")
            reducers = {**declared, **reducers}
            for spec in nodes.values():
                for label, field_key in (("over", spec.over), ("into", spec.into)):
                    if field_key is not None and field_key not in fields:
                        problems.append(
                            f"map node {spec.name!r}: {label}={field_key!r} is not a field of "
                            f"{state_type.__name__}"
                        )
                if spec.record is not None and spec.record not in fields:
                    problems.append(
                        f"barrier {spec.name!r} records into {spec.record!r}, which is not a "
                        f"field of {state_type.__name__}"
                    )

    for spec in nodes.values():
        if spec.kind == "map" and spec.into is not None:
            # "appends the results, in item order, to into": a recorded delta must replay the
            # same way, so the key gets the append reducer unless one is declared.
            reducers.setdefault(spec.into, _reducers.append)

    if problems:
        summary = "\n".join(f"- {p}" for p in problems)
        raise InvalidGraph(f"graph {name!r} is invalid:\n{summary}", problems=problems)
    assert start is not None
    return Validated(
        name=name,
        nodes=nodes,
        edges=list(b._edges),
        reducers=reducers,
        start=start,
        ends=ends,
        state_type=state_type,
    )


def _closure(seeds: set[str], links: dict[str, set[str]]) -> set[str]:
    seen = set(seeds)
    todo = list(seeds)
    while todo:
        for nxt in links[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
