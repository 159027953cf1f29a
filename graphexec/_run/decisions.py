"""Barrier decisions in one place: the checks an offered decision passes, the lookup that finds
one for a barrier occurrence (exact, then wildcard), and the merge of decisions that came
through the store.

The unused decisions live in the run's :class:`Position` (a checkpoint records them); these
functions read and update them there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._barrier_ids import is_resolved, parse_barrier_id
from .._decisions import Approve, Decision, Edit, Reject, Skip
from .._graph import Graph
from ..checkpoint._record import StoredDecision
from ..exceptions import InvalidDecision, NodeNotFound, StateError
from .position import Position

__all__ = (
    "check_barrier_node",
    "check_decision_type",
    "check_edit",
    "check_offer",
    "initial_decisions",
    "merge_stored",
    "take_decision",
)

_DECISION_TYPES = (Approve, Reject, Edit, Skip)


def check_decision_type(decision: object, *, trace_id: str | None) -> None:
    """Raise unless ``decision`` is one of the decision types."""
    if not isinstance(decision, _DECISION_TYPES):
        raise InvalidDecision(
            f"{decision!r} is not a decision: use gx.Approve(), gx.Reject(reason), "
            "gx.Edit(update) or gx.Skip()",
            trace_id=trace_id,
        )


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


def initial_decisions(
    graph: Graph, decisions: Mapping[str, Decision] | None, trace_id: str
) -> dict[str, Decision]:
    """Decisions given up front (execute, fork), checked as the handle checks them: a bad
    decision never starts the run."""
    found: dict[str, Decision] = {}
    for key, decision in (decisions or {}).items():
        node, _occurrence = parse_barrier_id(key)
        check_barrier_node(graph, node, trace_id=trace_id)
        check_decision_type(decision, trace_id=trace_id)
        if isinstance(decision, Edit):
            check_edit(graph, decision, node)
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
    check_decision_type(decision, trace_id=trace_id)
    if wildcard:
        node, occurrence = key, None
        if "#" in key:
            raise InvalidDecision(
                f"decide_node() takes a node name, got {key!r}; use decide() for one occurrence",
                trace_id=trace_id,
            )
    else:
        node, occurrence = parse_barrier_id(key)
        if occurrence is None:
            raise InvalidDecision(
                f"{key!r} is not a barrier id ('<node>#<occurrence>'); use decide_node() "
                "to decide every occurrence of a node",
                trace_id=trace_id,
            )
    check_barrier_node(graph, node, trace_id=trace_id)
    if occurrence is not None:
        pending = position.pending.barrier_id if position.pending else None
        if is_resolved(position.barrier_counts, pending, node, occurrence):
            raise InvalidDecision(
                f"barrier {key!r} was already resolved; a decision is never carried over to "
                "a later occurrence",
                trace_id=trace_id,
                node=node,
            )
        if key in position.decisions:
            raise InvalidDecision(
                f"barrier {key!r} already has a decision waiting to be used",
                trace_id=trace_id,
                node=node,
            )
    if isinstance(decision, Edit):
        check_edit(graph, decision, node)


def take_decision(position: Position, barrier_id: str, node: str) -> Decision | None:
    """The decision for one occurrence: an exact one is used up; a wildcard serves them all."""
    decision = position.decisions.pop(barrier_id, None)
    if decision is None:
        decision = position.decisions.get(node)
    return decision


def merge_stored(graph: Graph, position: Position, items: list[StoredDecision], log: Any) -> None:
    """Keep decisions that came through the store; ignore (and log) ones the run can never use."""
    for item in items:
        position.decision_cursor = max(position.decision_cursor, item.id)
        node, occurrence = parse_barrier_id(item.barrier_id)
        spec = graph.nodes.get(node)
        pending = position.pending.barrier_id if position.pending else None
        if (
            spec is None
            or node not in graph.decision_nodes
            or (
                occurrence is not None
                and is_resolved(position.barrier_counts, pending, node, occurrence)
            )
        ):
            log.warning(
                "ignored a stored decision", barrier_id=item.barrier_id, decision_id=item.id
            )
            continue
        if occurrence is not None and item.barrier_id in position.decisions:
            continue  # the first decision for an occurrence wins
        position.decisions[item.barrier_id] = item.decision
