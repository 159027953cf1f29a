"""The barrier-id grammar: ``"<node>#<occurrence>"`` names one occurrence, a bare node name all.

Shared by the run loop (decisions offered to a handle) and every store (decisions submitted
from another process), so it lives apart from both.
"""

from __future__ import annotations

from .exceptions import InvalidDecision

__all__ = ("barrier_id", "is_resolved", "parse_barrier_id")


def barrier_id(node: str, occurrence: int) -> str:
    """The id of occurrence ``occurrence`` (1-based) of barrier ``node``."""
    return f"{node}#{occurrence}"


def parse_barrier_id(barrier_id: str) -> tuple[str, int | None]:
    """Split ``"node#3"`` into ``("node", 3)``; a bare node name is a wildcard: ``(node, None)``."""
    node, sep, occ = barrier_id.rpartition("#")
    if not sep:
        return barrier_id, None
    if not occ.isdigit() or int(occ) < 1 or not node:
        raise InvalidDecision(
            f"bad barrier id {barrier_id!r}: expected '<node>#<occurrence>' (occurrence >= 1) "
            "or a barrier node name"
        )
    return node, int(occ)


def is_resolved(counts: dict[str, int], pending: str | None, node: str, occurrence: int) -> bool:
    """True if occurrence ``occurrence`` of barrier ``node`` has been reached and decided."""
    reached = counts.get(node, 0)
    if occurrence < reached:
        return True
    return occurrence == reached and pending != f"{node}#{occurrence}"
