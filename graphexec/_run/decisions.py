"""Barrier decisions in one place: the checks an offered decision passes (the same for the run
handle, ``decisions=`` given up front, ``ex.decide`` and the store), the lookup that finds one
for a barrier occurrence (exact, then wildcard), and the merge of decisions that came through
the store (a bad one is skipped and reported, never fails the run).

The unused decisions live in the run's :class:`Position` (a checkpoint records them); these
functions read and update them there. The graph-free core (grammar, occurrence, one decision
per occurrence) is ``_barrier_ids.check_decision``, which the stores call too.
"""

from __future__ import annotations

from collections.abc import Container, Mapping

import msgspec

from .._barrier_ids import WILDCARD, check_decision, check_decision_value
from .._decisions import Decision, Edit
from .._graph import Graph
from ..checkpoint._record import StoredDecision
from ..exceptions import GraphError, InvalidDecision, NodeNotFound, StateError
from .position import Position

__all__ = (
    "SkippedDecision",
    "check_barrier_node",
    "check_decision_type",
    "check_edit",
    "check_offer",
    "check_request",
    "initial_decisions",
    "merge_stored",
    "take_decision",
)


class SkippedDecision(msgspec.Struct, frozen=True, kw_only=True):
    """A decision read from the store that the run cannot use: skipped, and reported."""

    id: int
    barrier_id: str
    node: str
    reason: str


def check_decision_type(decision: object, *, trace_id: str | None) -> None:
    """Raise unless ``decision`` is one of the decision types."""
    check_decision_value(decision, trace_id=trace_id)


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


def take_decision(position: Position, barrier_id: str, node: str) -> Decision | None:
    """The decision for one occurrence: an exact one is used up; a wildcard serves them all."""
    decision = position.decisions.pop(barrier_id, None)
    if decision is None:
        decision = position.decisions.get(node)
    return decision


def merge_stored(
    graph: Graph, position: Position, items: list[StoredDecision], trace_id: str
) -> list[SkippedDecision]:
    """Keep decisions that came through the store; return the ones the run cannot use.

    A row the run cannot use (undecodable, a bare node name, not a barrier, an occurrence
    already resolved or already decided, an Edit the typed state refuses) never fails the run
    and never uses up an occurrence: it is skipped, and the caller reports it.
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
