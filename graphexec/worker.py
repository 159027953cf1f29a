"""Workers: processes that claim the store's runs that need a driver, and drive them.

A :class:`Worker` claims runs of its graphs with ``store.claim_runs`` (queued by
``ex.start(..., queue=True)``, interrupted by a shutdown, left by a dead or stopped worker,
waiting runs whose decision arrived or whose deadline came), one fresh lease per free slot, and
drives each in its executor's task group until it ends or waits at a barrier with no decision:
then the run is saved ``"waiting"`` without a lease and the slot is free (a human's decision,
made anywhere, makes the store hand the run to a worker again). Between claims it waits for a
``"work"`` hint (in process; ``LISTEN/NOTIFY`` on Postgres) or ``poll_interval``, and wakes
when a slot frees. ``stop()`` (or cancelling ``run()``) stops claiming and interrupts its runs:
each is recorded ``"interrupted"`` with its lease released, ready for another worker at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal

import anyio
import msgspec

from ._executor import GraphExecutor
from ._graph import Graph
from ._log import get_logger
from ._manager import new_leases
from ._policy import CheckpointPolicy
from ._telemetry import Telemetry
from .checkpoint._base import CheckpointStore
from .checkpoint._hints import WORK
from .exceptions import GraphError

if TYPE_CHECKING:
    from ._run import Driver

__all__ = ("Worker", "WorkerStats")


class WorkerStats(msgspec.Struct, kw_only=True):
    """What a worker did so far (``worker.stats``): counters for benches and operators."""

    claimed: int = 0
    """Runs claimed and started."""
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    waiting: int = 0
    """Drives that ended at a barrier with no decision (the run left waiting, slot freed)."""
    interrupted: int = 0
    """Runs handed back by a shutdown (recorded ``"interrupted"``)."""
    skipped: int = 0
    """Runs claimed that could not be resumed (logged; their lease given back)."""
    running: int = 0
    """Runs driven now."""


class Worker:
    """Claims and drives the runs of ``graphs`` in ``store`` until stopped.

    Args:
        store: the checkpoint store shared with whoever queues runs and decides barriers
            (SQLite for processes on one host, Postgres across hosts).
        graphs: the graphs it drives (a run of any other graph is left for other workers);
            at least one.
        concurrency: runs driven at once (default 8); a run waiting for a human holds none.
        poll_interval: the longest wait between two claim passes when no hint comes
            (default 1.0 s); a ``"work"`` hint or a freed slot ends the wait at once.
        lease_ttl: seconds a run's lease outlives its last renewal (default 30): how long a
            run of a worker that vanished on another host stays blocked (on this host a dead
            worker's runs are claimable at once).
        policy, max_steps, on_graph_change, record_events, record_custom_events, telemetry:
            as ``GraphExecutor``'s.
        decision_poll_interval: how often a driven run looks for a cancel request (and a
            waiting child run for decisions) in the store (default 0.25 s).
        on_run: called as ``on_run(what, trace_id, status)`` when a run is claimed
            (``"claimed"``, its status before the claim) and when its drive ends (``"ended"``:
            completed, failed, cancelled, waiting or interrupted); what ``graphexec worker``
            prints.
    """

    def __init__(
        self,
        store: CheckpointStore,
        graphs: Iterable[Graph],
        *,
        concurrency: int = 8,
        poll_interval: float = 1.0,
        lease_ttl: float = 30.0,
        policy: CheckpointPolicy | None = None,
        max_steps: int = 1000,
        on_graph_change: Literal["warn", "fail"] = "warn",
        record_events: bool = True,
        record_custom_events: bool = True,
        decision_poll_interval: float = 0.25,
        telemetry: Telemetry | None = None,
        on_run: Callable[[str, str, str], None] | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, not {concurrency!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0 seconds, not {poll_interval!r}")
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be > 0 seconds, not {lease_ttl!r}")
        self.executor = GraphExecutor(
            store=store,
            graphs=graphs,
            policy=policy,
            max_steps=max_steps,
            lease_ttl=lease_ttl,
            on_graph_change=on_graph_change,
            record_events=record_events,
            record_custom_events=record_custom_events,
            decision_poll_interval=decision_poll_interval,
            telemetry=telemetry,
        )
        """The executor that drives the claimed runs (its ``graphs`` is the registry)."""
        if not self.executor.graphs:
            raise ValueError("a Worker needs graphs=[...]: the graphs whose runs it drives")
        self.store = store
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.stats = WorkerStats()
        self._running: dict[str, Driver] = {}
        self._wake = anyio.Event()
        self._stopping = False
        self._started = False
        self._on_run = on_run
        self.log = get_logger().bind(worker=True)

    @property
    def graph_names(self) -> list[str]:
        """The names of the graphs whose runs it claims."""
        return sorted(self.executor.graphs)

    @property
    def running(self) -> list[str]:
        """Trace ids of the runs it drives now."""
        return list(self._running)

    def stop(self) -> None:
        """Stop claiming and hand the runs back: ``run()`` interrupts them (each recorded
        ``"interrupted"``, its lease released: another worker claims it at once) and returns."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Claim and drive runs until ``stop()`` or cancellation (both graceful: the runs are
        handed back before it returns or re-raises). A Worker runs once."""
        if self._started:
            raise RuntimeError("this Worker has already run: make a new one")
        self._started = True
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._stop_when_cancelled)
            # Shielded: an outer cancel would reach the runs before the executor could
            # interrupt them (they would be recorded "cancelled"); it becomes a stop() instead.
            with anyio.CancelScope(shield=True):
                await self._serve()
            tg.cancel_scope.cancel()

    async def _stop_when_cancelled(self) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            self.stop()

    async def _serve(self) -> None:
        names = self.graph_names
        self.log.info("worker started", graphs=names, concurrency=self.concurrency)
        try:
            async with self.executor:
                while not self._stopping:
                    self._wake = anyio.Event()
                    free = self.concurrency - len(self._running)
                    claimed = 0
                    if free > 0:
                        try:
                            claimed = await self._claim(free)
                        except GraphError as exc:  # the store is unreachable: try again later
                            self.log.warning("claim failed", error=str(exc))
                            with anyio.move_on_after(self.poll_interval):
                                await self._wake.wait()
                            continue
                    if self._stopping:
                        break
                    if free > 0 and claimed == free:
                        continue  # every slot filled: maybe more are ready (they free up)
                    await self._idle(want_work=claimed < free)
                self.log.info("worker stopping", running=len(self._running))
        finally:
            self.log.info("worker stopped", **msgspec.structs.asdict(self.stats))

    async def _claim(self, free: int) -> int:
        """One claim pass for ``free`` slots; the number of runs started."""
        manager = self.executor._manager
        claims = await self.store.claim_runs(
            self.graph_names, new_leases(free, self.executor.lease_ttl)
        )
        for claim in claims:
            driver = await manager.drive_claim(claim, leaves=True, ended=self._ended)
            if driver is None:
                self.stats.skipped += 1
                continue
            self._running[claim.trace_id] = driver
            self.stats.claimed += 1
            self.stats.running = len(self._running)
            self.log.info(
                "run claimed",
                trace_id=claim.trace_id,
                status=claim.run.status,
                token=claim.lease.token,
            )
            self._report("claimed", claim.trace_id, claim.run.status)
        return len(claims)

    async def _idle(self, *, want_work: bool) -> None:
        """Wait for a freed slot or ``stop()``; with free slots, also for a "work" hint or
        ``poll_interval``, whichever comes first."""
        wake = self._wake
        async with anyio.create_task_group() as tg:

            async def hinted() -> None:
                await self.store.wait_for(WORK, self.poll_interval)
                tg.cancel_scope.cancel()

            if want_work:
                tg.start_soon(hinted)
            await wake.wait()
            tg.cancel_scope.cancel()

    def _ended(self, driver: Driver) -> None:
        """A driven run ended (or left waiting): count it, free its slot."""
        trace_id = driver.trace_id
        if self._running.get(trace_id) is driver:
            del self._running[trace_id]
        stats = self.stats
        stats.running = len(self._running)
        result = driver.result
        status = result.status if result is not None else "failed"
        if status == "completed":
            stats.completed += 1
        elif status == "waiting":
            stats.waiting += 1
        elif status == "interrupted":
            stats.interrupted += 1
        elif status == "cancelled":
            stats.cancelled += 1
        else:
            stats.failed += 1
        self.log.info("run ended", trace_id=trace_id, status=status)
        self._report("ended", trace_id, status)
        self._wake.set()

    def _report(self, what: str, trace_id: str, status: str) -> None:
        if self._on_run is None:
            return
        try:
            self._on_run(what, trace_id, status)
        except Exception as exc:  # noqa: BLE001 - the observer's bug must not stop the runs
            self.log.error("on_run raised", trace_id=trace_id, error=repr(exc))
