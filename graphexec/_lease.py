"""Keeping a run's lease on its trace: renewed in the background while nothing is saved (a
long node, a barrier waiting), released at the end. Apart from checkpoint writing, which also
renews the lease with every commit and tells the keeper so.
"""

from __future__ import annotations

import time
import uuid

import anyio
from anyio.abc import TaskGroup

from ._log import get_logger
from .checkpoint._base import CheckpointStore
from .checkpoint._record import Lease
from .exceptions import GraphError

__all__ = ("LeaseKeeper",)


class LeaseKeeper:
    """One run's lease: its owner id, background renewal, release."""

    def __init__(self, store: CheckpointStore, trace_id: str, ttl: float) -> None:
        self.store = store
        self.trace_id = trace_id
        self.ttl = ttl
        self.owner = uuid.uuid4().hex
        self.error: GraphError | None = None
        """Set when renewal found the lease taken: the run must stop writing."""
        self.released = False
        self._renewed = 0.0
        self._closed = False

    @property
    def lease(self) -> Lease:
        """This run's lease on its trace."""
        return Lease(self.owner, self.ttl)

    def renewed(self) -> None:
        """A commit renewed the lease (every save carries it): no renewal needed for a while."""
        self._renewed = time.monotonic()

    def start(self, tg: TaskGroup) -> None:
        tg.start_soon(self._renew)

    async def _renew(self) -> None:
        """Keep the lease while a long node runs or a barrier waits with nothing to save."""
        period = max(self.ttl / 3, 0.05)
        while not self._closed:
            await anyio.sleep(period)
            if time.monotonic() - self._renewed < period:
                continue
            try:
                await self.store.acquire_lease(self.trace_id, self.lease)
            except GraphError as exc:
                self.error = exc
                return
            except Exception as exc:  # noqa: BLE001 - a passing store error: retry next period
                get_logger(trace_id=self.trace_id).warning("lease renewal failed", error=repr(exc))

    async def release(self) -> None:
        """Give the lease up (unless a final commit already did); never raises."""
        self._closed = True
        if self.released:
            return
        self.released = True
        with anyio.CancelScope(shield=True):
            try:
                await self.store.release_lease(self.trace_id, self.owner)
            except Exception as exc:  # noqa: BLE001 - the lease expires by itself anyway
                get_logger(trace_id=self.trace_id).warning("lease not released", error=repr(exc))
