"""Reads a waiting run repeats before it gives up: a passing store error must not fail a run.

A run waiting at a barrier polls the store for decisions every ``decision_poll_interval``, for
minutes or days. A read that fails once (SQLite busy past its timeout while another process
checkpoints, a network blip to a database, an I/O error that clears) would otherwise fail a run
that has nothing wrong with it. Reads change nothing, so repeating one is always safe; only
errors that no retry can change (a bad trace id, an unknown run) are raised at once.
"""

from __future__ import annotations

import anyio

from .._log import get_logger
from ..exceptions import CheckpointError, GraphError, InvalidTraceId, RunNotFound
from ._base import CheckpointStore
from ._record import StoredDecision

__all__ = ("READ_RETRY_WAITS", "decisions_after")

READ_RETRY_WAITS = (0.05, 0.2, 0.5, 1.0)
"""Seconds to wait before each retry of a failed read: five attempts over about 1.75 s, well
past a SQLite busy spell and short next to any barrier's wait."""

_PERMANENT = (InvalidTraceId, RunNotFound)


async def decisions_after(
    store: CheckpointStore, trace_id: str, cursor: int
) -> list[StoredDecision]:
    """``store.decisions_after(trace_id, cursor)``, retried on failure (READ_RETRY_WAITS).

    The last failure is raised as a graphexec error (a store's own exception becomes a
    CheckpointError naming the trace).
    """
    for wait in (*READ_RETRY_WAITS, None):
        try:
            return await store.decisions_after(trace_id, cursor)
        except _PERMANENT:
            raise
        except Exception as exc:
            if wait is None:
                if isinstance(exc, GraphError):
                    raise
                raise CheckpointError(
                    f"reading decisions failed: {exc!r}", trace_id=trace_id
                ) from exc
            get_logger(trace_id=trace_id).warning(
                "reading decisions failed; retrying", error=repr(exc), retry_in=wait
            )
            await anyio.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
