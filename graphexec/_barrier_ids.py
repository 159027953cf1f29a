"""The barrier-id grammar, and the checks every decision passes whatever path it takes.

``"<node>#<occurrence>"`` names one occurrence. Every occurrence of a node (a wildcard) is only
ever asked for explicitly (``handle.decide_node``, a bare node name in ``decisions=`` given up
front, ``submit_decision(..., every_occurrence=True)``); the store keeps such a decision under
``"<node>#*"``, so a bare node name in the inbox (written by an older graphexec, or by hand) is
never taken for one.

Shared by the run loop (decisions offered to a handle, given up front, read from the store)
and every store (decisions submitted from another process), so it lives apart from both.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Mapping

from ._decisions import Approve, Edit, Reject, Skip
from .exceptions import InvalidDecision

__all__ = (
    "WILDCARD",
    "barrier_id",
    "check_decision",
    "check_decision_value",
    "is_resolved",
    "parse_barrier_id",
    "stored_key",
)

WILDCARD = "*"
"""The occurrence part of a stored wildcard: ``"<node>#*"``."""

_DECISION_TYPES = (Approve, Reject, Edit, Skip)


def barrier_id(node: str, occurrence: int) -> str:
    """The id of occurrence ``occurrence`` (1-based) of barrier ``node``."""
    return f"{node}#{occurrence}"


def stored_key(node: str, occurrence: int | None) -> str:
    """How the store's inbox names a decision: ``"node#3"``, or ``"node#*"`` for a wildcard."""
    return f"{node}#{WILDCARD if occurrence is None else occurrence}"


def parse_barrier_id(barrier_id: str) -> tuple[str, int | None]:
    """Split ``"node#3"`` into ``("node", 3)``; a bare node name gives ``(node, None)``."""
    node, sep, occ = barrier_id.rpartition("#")
    if not sep:
        return barrier_id, None
    if not occ.isdigit() or int(occ) < 1 or not node:
        raise InvalidDecision(
            f"bad barrier id {barrier_id!r}: expected '<node>#<occurrence>' (occurrence >= 1) "
            "or a barrier node name"
        )
    return node, int(occ)


def is_resolved(counts: Mapping[str, int], pending: str | None, node: str, occurrence: int) -> bool:
    """True if occurrence ``occurrence`` of barrier ``node`` has been reached and decided."""
    reached = counts.get(node, 0)
    if occurrence < reached:
        return True
    return occurrence == reached and pending != f"{node}#{occurrence}"


def check_decision_value(decision: object, *, trace_id: str | None) -> None:
    """Raise unless ``decision`` is one of the decision types (a dict or a string is not)."""
    if not isinstance(decision, _DECISION_TYPES):
        raise InvalidDecision(
            f"{decision!r} is not a decision: use gx.Approve(), gx.Reject(reason), "
            'gx.Edit(update) or gx.Skip() (on the wire: a JSON object tagged by "type", '
            'e.g. {"type": "approve"})',
            trace_id=trace_id,
        )
    if isinstance(decision, Edit):
        for key in decision.update:
            if not isinstance(key, str):
                raise InvalidDecision(
                    f"Edit update keys must be str, got {key!r}", trace_id=trace_id
                )


def check_decision(
    key: str,
    decision: object,
    *,
    every_occurrence: bool | None,
    trace_id: str | None,
    barrier_nodes: Collection[str] | None,
    counts: Mapping[str, int],
    pending: str | None,
    decided: Container[str],
    graph_name: str | None = None,
) -> tuple[str, int | None]:
    """The checks every decision passes, on every path; returns ``(node, occurrence)``
    (occurrence None: every occurrence of the node).

    Args:
        key: A barrier id (``"node#3"``), or a barrier node name for every occurrence.
        every_occurrence: True: ``key`` must be a node name (an explicit wildcard); False: it
            must be a barrier id; None: either (``decisions=`` given up front).
        barrier_nodes: The graph's barrier nodes; None when not known (the check is skipped).
        counts, pending: Where the run stands (occurrences reached, the one waiting).
        decided: Barrier ids that already hold an exact decision.

    Raises:
        InvalidDecision: naming what is wrong and what to do instead.
    """
    check_decision_value(decision, trace_id=trace_id)
    if every_occurrence:
        if "#" in key:
            raise InvalidDecision(
                f"every_occurrence takes a barrier node name, got {key!r}; name one occurrence "
                "without it",
                trace_id=trace_id,
            )
        node, occurrence = key, None
    else:
        node, occurrence = parse_barrier_id(key)
        if occurrence is None and every_occurrence is False:
            raise InvalidDecision(
                f"{key!r} is not a barrier id ('<node>#<occurrence>'). A decision for every "
                f"occurrence of a node is only taken when asked for explicitly: "
                f"handle.decide_node({key!r}, ...), a bare node name in decisions= given up "
                f"front, or store.submit_decision(trace_id, {key!r}, ..., every_occurrence=True)",
                trace_id=trace_id,
                node=node,
            )
    if barrier_nodes is not None and node not in barrier_nodes:
        graph = f" of graph {graph_name!r}" if graph_name else ""
        raise InvalidDecision(
            f"{node!r} is not a barrier node{graph} "
            f"(barriers: {', '.join(sorted(barrier_nodes)) or 'none'})",
            trace_id=trace_id,
            node=node,
        )
    if occurrence is not None:
        bid = barrier_id(node, occurrence)
        if is_resolved(counts, pending, node, occurrence):
            raise InvalidDecision(
                f"barrier {bid!r} was already resolved; a decision is never carried over to "
                "a later occurrence",
                trace_id=trace_id,
                node=node,
            )
        if bid in decided:
            raise InvalidDecision(
                f"barrier {bid!r} already has a decision; one decision per occurrence (the "
                "second is refused, not dropped)",
                trace_id=trace_id,
                node=node,
            )
    return node, occurrence
