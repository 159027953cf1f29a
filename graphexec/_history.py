"""A run's checkpoint history in pages, optionally with the state at each checkpoint.

``ex.history`` lists checkpoints oldest first. ``before=seq`` asks for the checkpoints with a
smaller seq and ``limit=n`` keeps the newest ``n`` of them, so a caller pages backwards from the
newest: ``page = history(t, limit=20)``, then ``history(t, limit=20, before=page[0].seq)``
until a page comes back empty. With ``values=True`` each summary carries the state at that
checkpoint (replayed like ``get_state(seq=...)``; custom reducers need the graph or a
registered name).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ._graph import Graph
from ._restore import restore
from .checkpoint._base import CheckpointStore
from .checkpoint._record import CheckpointSummary
from .exceptions import RunNotFound

__all__ = ("history_page",)


async def history_page(
    store: CheckpointStore,
    trace_id: str,
    *,
    limit: int | None,
    before: int | None,
    values: bool,
    graph: Graph | None,
) -> list[CheckpointSummary]:
    """One page of a run's history, oldest first; RunNotFound for an unknown trace."""
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"history limit must be an int >= 0 or None, got {limit!r}")
    found = await store.history(trace_id, limit=limit, before=before)
    if not found and await store.get_run(trace_id) is None:
        raise RunNotFound(f"no run with trace id {trace_id!r} in the store", trace_id=trace_id)
    if not values:
        return found
    out = []
    for summary in found:
        restored = await restore(store, trace_id, seq=summary.seq, graph=graph)
        state: Any = restored.state
        if graph is not None and graph.state_type is not None:
            state = graph.spec.public(restored.state)
        out.append(msgspec.structs.replace(summary, state=state))
    return out
