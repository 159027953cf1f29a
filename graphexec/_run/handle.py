"""What a caller holds of a streaming run: the Run it iterates and the RunHandle that steers it
(decisions, cancel, explicit checkpoints). Both talk to the run's Driver."""

from __future__ import annotations

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from .._decisions import Approve, Decision, Reject
from .._events import GraphEvent
from ..typing import RunStatus
from .driver import Driver
from .result import GraphResult

__all__ = ("Run", "RunHandle")


class RunHandle:
    """Steers a streaming run: decisions for its barriers, cancel, explicit checkpoints."""

    def __init__(self, driver: Driver) -> None:
        self._driver = driver

    @property
    def trace_id(self) -> str:
        """The run's trace id."""
        return self._driver.trace_id

    @property
    def status(self) -> RunStatus:
        """``running``, ``waiting`` (at a barrier), or how the run ended."""
        return self._driver.status

    @property
    def pending_barrier(self) -> str | None:
        """The id of the barrier the run waits at, if any."""
        pending = self._driver.pos.pending
        return pending.barrier_id if pending else None

    async def approve(self, barrier_id: str) -> None:
        """Approve barrier ``"<node>#<n>"`` (now, or when it is reached)."""
        self._driver.offer(barrier_id, Approve(), wildcard=False)

    async def reject(self, barrier_id: str, reason: str | None = None) -> None:
        """Reject barrier ``"<node>#<n>"``; ``reason`` is recorded in the state."""
        self._driver.offer(barrier_id, Reject(reason), wildcard=False)

    async def decide(self, barrier_id: str, decision: Decision) -> None:
        """Send any decision (Approve, Reject, Edit, Skip) for one barrier occurrence."""
        self._driver.offer(barrier_id, decision, wildcard=False)

    async def decide_node(self, node: str, decision: Decision) -> None:
        """Decide every occurrence of barrier ``node`` (an exact decision still wins)."""
        self._driver.offer(node, decision, wildcard=True)

    async def cancel(self) -> None:
        """End the run with Cancelled, checkpointing first (it can be resumed)."""
        self._driver.request_cancel()

    async def checkpoint(self) -> None:
        """Ask for a checkpoint at the next step boundary (with ``on_explicit``)."""
        self._driver.request_checkpoint()


class Run:
    """A streaming run: ``async for event in run``; ``run.handle`` steers it; ``run.result``
    once it has ended (also after leaving the ``async with``)."""

    def __init__(self, driver: Driver, events: MemoryObjectReceiveStream[GraphEvent]) -> None:
        self._driver = driver
        self._events = events
        self.handle = RunHandle(driver)

    @property
    def trace_id(self) -> str:
        """The run's trace id."""
        return self._driver.trace_id

    @property
    def result(self) -> GraphResult:
        """How the run ended; RuntimeError while it is still going."""
        if self._driver.result is None:
            raise RuntimeError(
                "the run is still going: read run.result after the event stream ends or after "
                "leaving the async with block"
            )
        return self._driver.result

    def __aiter__(self) -> Run:
        return self

    async def __anext__(self) -> GraphEvent:
        try:
            return await self._events.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None
