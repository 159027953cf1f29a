"""The structural checks ``GraphBuilder.build()`` runs; every problem is reported at once."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from . import reducers as _reducers
from ._spec import _ON_FAILURE, ERRORS_KEY, Declarations, NodeSpec, Validated
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
    nodes = _resilience(nodes, getattr(b, "_defaults", {}), b, problems)
    # A node that only serves as another's compensation is reached by on_failure, not by edges.
    compensations = {s.compensate for s in nodes.values() if s.compensate is not None}
    only_compensation = {
        n for n in compensations & known if not any(e.target == n for e in b._edges)
    }

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
        for n in sorted(known - reached - only_compensation):
            problems.append(f"node {n!r} is unreachable from the start node {start!r}")
    if ends & known:
        can_end = _closure(set(ends & known), pred)
        for n in sorted(known - can_end - only_compensation):
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

    if any(s.on_failure in ("skip", "pause") for s in nodes.values()):
        # Skipped failures are recorded under one key, merged per node (README "Resilience").
        if state_type is not None and ERRORS_KEY not in {
            f.name for f in msgspec.structs.fields(state_type)
        }:
            skipping = sorted(n for n, s in nodes.items() if s.on_failure in ("skip", "pause"))
            problems.append(
                f"node {skipping[0]!r} may skip a failure (on_failure='skip' or 'pause'), "
                f"which records it under state key {ERRORS_KEY!r}: add a field "
                f"`{ERRORS_KEY}: dict[str, dict[str, Any]] = {{}}` to {state_type.__name__}"
            )
        reducers.setdefault(ERRORS_KEY, _reducers.merge)
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


def _resilience(
    nodes: dict[str, NodeSpec], defaults: dict[str, Any], b: Declarations, problems: list[str]
) -> dict[str, NodeSpec]:
    """Apply the builder's defaults to every non-barrier node and check the settings."""
    out: dict[str, NodeSpec] = {}
    fallbacks = {e.source for e in b._edges if e.kind == "fallback"}
    for name, spec in nodes.items():
        if spec.kind == "barrier":
            if spec.retry is not None:
                problems.append(
                    f"barrier {name!r} has retry=: a barrier calls no node that could be "
                    "retried (its decision comes from a human)"
                )
            out[name] = spec
            continue
        changes = {k: v for k, v in defaults.items() if getattr(spec, k) is None and v is not None}
        if spec.on_failure is None and "on_failure" not in changes:
            changes["on_failure"] = "fail"
        if changes:
            spec = msgspec.structs.replace(spec, **changes)
        where = f"node {name!r}"
        if spec.retry is not None:
            problems.extend(f"{where}: retry {p}" for p in spec.retry.problems())
        if spec.breaker is not None:
            problems.extend(f"{where}: {p}" for p in spec.breaker.problems())
        for label, value in (
            ("timeout", spec.timeout),
            ("heartbeat_timeout", spec.heartbeat_timeout),
        ):
            if value is not None and not (isinstance(value, int | float) and value > 0):
                problems.append(f"{where}: {label} must be > 0 seconds, got {value!r}")
        calls = [spec.call] if spec.call is not None else [b.call for b in spec.branches]
        if (spec.timeout is not None or spec.heartbeat_timeout is not None) and any(
            c.inline and not c.is_async for c in calls
        ):
            problems.append(
                f"{where}: an inline=True sync function blocks the event loop, so timeout= and "
                "heartbeat_timeout= cannot stop it; drop inline=True (it then runs in a worker "
                "thread) or the timeout"
            )
        if spec.on_failure not in _ON_FAILURE:
            problems.append(
                f"{where}: on_failure must be one of {', '.join(_ON_FAILURE)}, "
                f"got {spec.on_failure!r}"
            )
        if spec.on_failure == "fallback" and name not in fallbacks:
            problems.append(
                f"{where} has on_failure='fallback' but no fallback edge; declare one with "
                f".fallback({name!r}, target)"
            )
        if spec.compensate is not None:
            target = nodes.get(spec.compensate)
            if target is None:
                problems.append(
                    f"{where}: compensate={spec.compensate!r} names no node of the graph"
                )
            elif target.kind != "node" or spec.compensate == name:
                problems.append(
                    f"{where}: compensate={spec.compensate!r} must name another plain node "
                    f"(it is a {target.kind} node)"
                    if target.kind != "node"
                    else f"{where}: a node cannot compensate itself"
                )
        guarded = (
            spec.timeout is not None
            or spec.heartbeat_timeout is not None
            or spec.breaker is not None
        )
        if guarded or spec.retry is not None:
            spec = msgspec.structs.replace(spec, resilient=True, guarded=guarded)
        out[name] = spec
    return out
