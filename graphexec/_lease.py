"""Keeping a run's lease on its trace: acquiring it (with the owner's name and the fencing
token the store grants), renewing it in the background while nothing is saved (a long node),
giving it up while a barrier waits (a waiting run holds no lease: any process may resume it
when its decision comes) and taking it back before the next write, and releasing it at the end.

Checkpoint writing renews the lease with every commit (the store checks the owner and token in
the commit's transaction: ``checkpoint/_leases.py``) and tells the keeper so. A keeper whose
lease was taken over holds a LeaseLost in ``error``: the run writes nothing more.
"""

from __future__ import annotations

import time
import uuid

import anyio
from anyio.abc import TaskGroup

from ._log import get_logger
from .checkpoint._base import CheckpointStore
from .checkpoint._leases import this_process
from .checkpoint._record import Claim, Lease, LeaseGrant, RunInfo
from .exceptions import GraphError, LeaseLost, RunLocked

__all__ = ("LeaseKeeper",)


class LeaseKeeper:
    """One run's lease: its owner id and fencing token, background renewal, parking while a
    barrier waits, release."""

    def __init__(self, store: CheckpointStore, trace_id: str, ttl: float) -> None:
        self.store = store
        self.trace_id = trace_id
        self.ttl = ttl
        self.owner = uuid.uuid4().hex
        self.token = 0
        """The fencing token the store granted (0 until acquired)."""
        self.committed_seq: int | None = None
        """The trace's last seq this driver committed (or restored from)."""
        self.error: GraphError | None = None
        """Set once the lease was found taken over: the run must stop writing."""
        self.released = False
        self.parked = False
        """True while a waiting barrier holds no lease (taken back before the next write)."""
        self._renewed = 0.0
        self._closed = False

    @property
    def lease(self) -> Lease:
        """This run's lease on its trace, as every write carries it."""
        host, pid, started = this_process()
        return Lease(self.owner, self.ttl, self.token, host, pid, started)

    def renewed(self) -> None:
        """A commit renewed the lease (every save carries it): no renewal needed for a while."""
        self._renewed = time.monotonic()

    def _granted(self, grant: LeaseGrant) -> RunInfo | None:
        self.token = grant.token
        self.renewed()
        return grant.run

    async def acquire(self, *, take_over: bool = False) -> RunInfo | None:
        """Take the lease (RunLocked while another live owner holds it); the run's index row."""
        return self._granted(
            await self.store.acquire_lease(self.trace_id, self.lease, take_over=take_over)
        )

    def adopt(self, claim: Claim) -> RunInfo:
        """Hold the lease ``claim_runs`` granted (its owner id and fencing token) instead of
        acquiring one; the run's index row as the claim read it."""
        self.owner = claim.lease.owner
        self.token = claim.lease.token
        self.renewed()
        return claim.run

    def start(self, tg: TaskGroup) -> None:
        tg.start_soon(self._renew)

    def lost(self, exc: LeaseLost) -> None:
        """A write found the lease taken over: nothing more is written, nothing released."""
        self.error = exc
        self.released = True

    async def park(self) -> None:
        """Give the lease up while a barrier waits (a save may already have: ``parked``)."""
        if self.parked or self.released or self.error is not None:
            return
        await self.store.release_lease(self.trace_id, self.owner)
        self.parked = True

    async def unpark(self) -> None:
        """Take the lease back before writing after a wait: LeaseLost if another driver holds
        it, or wrote a checkpoint since this one's last (it resumed the run meanwhile)."""
        if self.error is not None:
            raise self.error
        if not self.parked:
            return
        try:
            grant = await self.store.acquire_lease(
                self.trace_id, self.lease, expect_seq=self.committed_seq
            )
        except (RunLocked, LeaseLost) as exc:
            lost = LeaseLost(
                f"run {self.trace_id!r} was resumed elsewhere while it waited here without a "
                f"lease: {exc.message}",
                trace_id=self.trace_id,
                token=self.token,
            )
            self.lost(lost)
            raise lost from exc
        self._granted(grant)
        self.parked = False

    async def _renew(self) -> None:
        """Keep the lease while a long node runs (not while parked)."""
        period = max(self.ttl / 3, 0.05)
        while not self._closed:
            await anyio.sleep(period)
            if self.parked or self.released or time.monotonic() - self._renewed < period:
                continue
            try:
                grant = await self.store.acquire_lease(
                    self.trace_id, self.lease, expect_seq=self.committed_seq
                )
            except (RunLocked, LeaseLost) as exc:
                self.lost(
                    LeaseLost(
                        f"run {self.trace_id!r}: this driver's lease was taken over ({exc.message})",
                        trace_id=self.trace_id,
                        token=self.token,
                    )
                )
                return
            except GraphError as exc:
                self.error = exc
                return
            except Exception as exc:  # noqa: BLE001 - a passing store error: retry next period
                get_logger(trace_id=self.trace_id).warning("lease renewal failed", error=repr(exc))
            else:
                if not self.parked:
                    self._granted(grant)

    async def release(self) -> None:
        """Give the lease up (unless a final commit already did, or it was lost); never raises."""
        self._closed = True
        if self.released or self.parked:
            return
        self.released = True
        with anyio.CancelScope(shield=True):
            try:
                await self.store.release_lease(self.trace_id, self.owner)
            except Exception as exc:  # noqa: BLE001 - the lease expires by itself anyway
                get_logger(trace_id=self.trace_id).warning("lease not released", error=repr(exc))
