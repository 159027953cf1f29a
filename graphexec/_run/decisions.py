"""Barrier decisions in one place: the checks an offered decision passes (the same for the run
handle, ``decisions=`` given up front, ``ex.decide`` and the store), the lookup that finds one
for a barrier occurrence (exact, then wildcard), and the merge of decisions that came through
the store (a bad one is skipped and reported, never fails the run).

The unused decisions live in the run's :class:`Position` (a checkpoint records them); these
functions read and update them there. The graph-free core (grammar, occurrence, one decision
per occurrence) is ``_barrier_ids.check_decision``, which the stores call too.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping

import msgspec

from .._barrier_ids import (
    WILDCARD,
    check_decision,
    check_decision_value,
    parse_barrier_id,
)
from .._decisions import Decision, Edit
from .._graph import Graph
from ..checkpoint._record import StoredDecision
from ..exceptions import GraphError, InvalidDecision, NodeNotFound, StateError
from .position import Position

__all__ = (
    "SkippedDecision",
    "check_barrier_node",
    "check_edit",
    "check_offer",
    "check_path_decision",
    "check_request",
    "initial_decisions",
    "merge_stored",
    "split_path",
    "take_decision",
)


class SkippedDecision(msgspec.Struct, frozen=True, kw_only=True):
    """A decision read from the store that the run cannot use: skipped, and reported."""

    id: int
    barrier_id: str
    node: str
    reason: str


def check_barrier_node(graph: Graph, node: str, *, trace_id: str | None) -> None:
    """Raise unless ``node`` is a barrier of ``graph``."""
    spec = graph.nodes.get(node)
    if spec is None:
        raise NodeNotFound(
            f"graph {graph.name!r} has no node {node!r}", trace_id=trace_id, node=node
        )
    if node not in graph.decision_nodes:
        raise InvalidDecision(
            f"node {node!r} is a {spec.kind} node, not a barrier (nor on_failure='pause'): "
            "it takes no decisions",
            trace_id=trace_id,
            node=node,
        )


def check_edit(graph: Graph, decision: Edit, node: str) -> None:
    """Validate an Edit's update against the graph's state (StateError names the key)."""
    for key, value in decision.update.items():
        if not isinstance(key, str):
            raise StateError(f"Edit update keys must be str, got {key!r}", node=node)
        graph.spec.check(key, value, node=node)


def check_request(
    key: str,
    decision: object,
    *,
    every_occurrence: bool | None,
    trace_id: str,
    graph: Graph | None,
    barrier_nodes: list[str] | None = None,
    counts: Mapping[str, int],
    pending: str | None,
    decided: Container[str],
) -> tuple[str, int | None]:
    """THE check for a decision, whoever sends it (handle, ``decisions=``, ``ex.decide``):
    the graph-free core (:func:`check_decision`), then, with the graph at hand, the node's
    kind and an ``Edit`` against the typed state. Returns ``(node, occurrence)``.

    Raises InvalidDecision (NodeNotFound for a name that is no node of the graph; StateError
    for an Edit the typed state refuses).
    """
    node, occurrence = check_decision(
        key,
        decision,
        every_occurrence=every_occurrence,
        trace_id=trace_id,
        barrier_nodes=barrier_nodes if graph is None else None,
        counts=counts,
        pending=pending,
        decided=decided,
    )
    if graph is not None:
        check_barrier_node(graph, node, trace_id=trace_id)
        if isinstance(decision, Edit):
            check_edit(graph, decision, node)
    return node, occurrence


def initial_decisions(
    graph: Graph, decisions: Mapping[str, Decision] | None, trace_id: str
) -> dict[str, Decision]:
    """Decisions given up front (execute, fork): a bare node name decides every occurrence.
    Checked as the handle checks them: a bad decision never starts the run."""
    found: dict[str, Decision] = {}
    for key, decision in (decisions or {}).items():
        if "/" in key:  # a barrier inside a child graph: its id, or a path pattern
            check_decision_value(decision, trace_id=trace_id)
            check_path_decision(
                graph, key, wildcard="#" not in key, trace_id=trace_id, decision=decision
            )
            found[key] = decision
            continue
        check_request(
            key,
            decision,
            every_occurrence=None,
            trace_id=trace_id,
            graph=graph,
            counts={},
            pending=None,
            decided=found,
        )
        found[key] = decision
    return found


def check_offer(
    graph: Graph,
    position: Position,
    key: str,
    decision: Decision,
    *,
    wildcard: bool,
    trace_id: str,
) -> None:
    """Refuse, with a clear error, a decision offered through a handle that the run cannot use."""
    check_request(
        key,
        decision,
        every_occurrence=wildcard,
        trace_id=trace_id,
        graph=graph,
        counts=position.barrier_counts,
        pending=position.pending.barrier_id if position.pending else None,
        decided=position.decisions,
    )


def split_path(key: str) -> tuple[str, str]:
    """``"tools[2]/approve#1"`` -> ``("tools[2]", "approve#1")`` (first segment, rest)."""
    head, _sep, rest = key.partition("/")
    return head, rest


def _child_of(graph: Graph, head: str, *, pattern: bool) -> tuple[str, Graph] | None:
    """The parent node and child graph a path segment names (``"sub"``, ``"tools[2]"``,
    ``"research[deep]"``; with ``pattern``, ``"tools[*]"``), or None."""
    name, bracket, rest = head.partition("[")
    spec = graph.nodes.get(name)
    if spec is None:
        return None
    if not bracket:
        if spec.kind == "subgraph" and spec.child is not None:
            return name, spec.child.graph
        return None
    if not rest.endswith("]"):
        return None
    key = rest[:-1]
    if spec.kind == "map" and spec.child is not None:
        if key.isdigit() or (pattern and "*" in key):
            return name, spec.child.graph
        return None
    if spec.kind == "parallel":
        for b in spec.branches:
            if b.child is not None and (b.name == key or (pattern and "*" in key)):
                return name, b.child.graph
    return None


def check_path_decision(
    graph: Graph,
    key: str,
    *,
    wildcard: bool,
    trace_id: str | None,
    decision: object = None,
) -> str:
    """Check that ``key`` (``"tools[2]/approve#1"``, or with ``wildcard`` a path pattern like
    ``"tools[*]/approve"``) names a barrier inside a child graph of ``graph``; return the
    barrier node's path. Raises NodeNotFound or InvalidDecision naming what is wrong."""
    g = graph
    rest = key
    walked: list[str] = []
    while "/" in rest:
        head, rest = split_path(rest)
        found = _child_of(g, head, pattern=wildcard)
        if found is None:
            raise NodeNotFound(
                f"{key!r}: {'/'.join([*walked, head])!r} is not a child graph of graph "
                f"{graph.name!r} (a subgraph node, a map item '<node>[<i>]' or a branch that "
                "is a graph '<node>[<branch>]')",
                trace_id=trace_id,
                node=key,
            )
        walked.append(head)
        g = found[1]
    node, occurrence = parse_barrier_id(rest)
    if wildcard and occurrence is not None:
        raise InvalidDecision(
            f"decide_node() takes a node path, got {key!r}; use decide() for one occurrence",
            trace_id=trace_id,
        )
    if not wildcard and occurrence is None:
        raise InvalidDecision(
            f"{key!r} is not a barrier id ('<path>/<node>#<occurrence>'); use decide_node() "
            "to decide every occurrence of a node path",
            trace_id=trace_id,
        )
    try:
        check_barrier_node(g, node, trace_id=trace_id)
        if isinstance(decision, Edit):  # against the child's state, where it applies
            check_edit(g, decision, node)
    except GraphError as exc:
        exc.node = "/".join([*walked, node])
        raise
    return "/".join([*walked, node])


def take_decision(position: Position, barrier_id: str, node: str) -> Decision | None:
    """The decision for one occurrence: an exact one is used up; a wildcard serves them all."""
    decision = position.decisions.pop(barrier_id, None)
    if decision is None:
        decision = position.decisions.get(node)
    return decision


def merge_stored(
    graph: Graph,
    position: Position,
    items: list[StoredDecision],
    trace_id: str,
    *,
    route: Callable[[str, Decision, bool], None] | None = None,
) -> list[SkippedDecision]:
    """Keep decisions that came through the store; return the ones the run cannot use.

    A row the run cannot use (undecodable, a bare node name, not a barrier, an occurrence
    already resolved or already decided, an Edit the typed state refuses) never fails the run
    and never uses up an occurrence: it is skipped, and the caller reports it. A decision
    for a barrier inside a child run (a path id or pattern) goes to ``route`` (the run's
    ``ChildHost``), which checks it against the child graph and raises what it refuses.
    """
    skipped: list[SkippedDecision] = []
    pending = position.pending.barrier_id if position.pending else None
    for item in items:
        position.decision_cursor = max(position.decision_cursor, item.id)
        key = item.barrier_id
        node = key.rpartition("#")[0] or key
        try:
            if item.decision is None:
                raise InvalidDecision(f"the stored decision cannot be read: {item.error}")
            wildcard = key.endswith("#" + WILDCARD)
            if not wildcard and "#" not in key:
                raise InvalidDecision(
                    f"{key!r} is a bare node name: a wildcard is only taken when submitted "
                    "with every_occurrence=True"
                )
            if "/" in key and route is not None:
                route(node if wildcard else key, item.decision, wildcard)
                continue
            node, _ = check_request(
                node if wildcard else key,
                item.decision,
                every_occurrence=wildcard,
                trace_id=trace_id,
                graph=graph,
                counts=position.barrier_counts,
                pending=pending,
                decided=position.decisions,
            )
        except GraphError as exc:
            skipped.append(
                SkippedDecision(id=item.id, barrier_id=key, node=node, reason=exc.message)
            )
            continue
        position.decisions[node if wildcard else key] = item.decision
    return skipped
