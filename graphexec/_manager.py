"""The run manager: runs that live apart from their consumer.

``async with GraphExecutor(store=..., graphs=[...]) as ex`` gives the executor a task group;
``ex.start`` drives runs in it without a consumer; leaving the block checkpoints them and stops
them as ``"interrupted"``. ``ex.decide`` and ``ex.cancel`` reach a run in this process directly
and any other through the store; ``ex.recover`` resumes the store's runs that need a driver;
``ex.events`` reads a trace's recorded events and then tails the live ones (straight from the
driver in this process, by polling the store otherwise). ``graphs=`` is the registry, by graph
name, that recovery uses to find a run's graph.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

from ._decisions import Decision
from ._eventcodec import read_events
from ._eventlog import EventLog
from ._events import TERMINAL_EVENTS, ErrorInfo, GraphEvent, GraphFailed
from ._graph import Graph
from ._lease import LeaseKeeper
from ._log import get_logger
from ._restore import restore
from ._run.decisions import check_path_decision, check_request
from .checkpoint._base import FINISHED_STATUSES, CheckpointStore, StoreBase
from .checkpoint._hints import events_topic
from .checkpoint._leases import this_process
from .checkpoint._record import (
    CheckpointBody,
    Claim,
    Lease,
    RunInfo,
    StoredCheckpoint,
    decode_body,
    encode_body,
    now,
)
from .exceptions import CheckpointError, GraphError, RunFinished, RunLocked, RunNotFound

if TYPE_CHECKING:
    from ._emit import Emitter
    from ._run import Driver


class _Executor(Protocol):
    """What the manager uses of its GraphExecutor (a Protocol: _executor imports this module)."""

    store: CheckpointStore | None
    lease_ttl: float
    record_events: bool
    record_custom_events: bool
    event_flush_interval: float
    event_poll_interval: float | None

    def _need_store(self, what: str) -> CheckpointStore: ...

    def _emitter(self, stream: Any, trace_id: str) -> Emitter: ...

    async def _new_driver(
        self,
        graph: Graph,
        state: Any,
        trace_id: str | None,
        decisions: Mapping[str, Decision] | None,
        emitter: Emitter | None,
    ) -> Driver: ...

    async def _resumed_driver(
        self,
        graph: Graph,
        trace_id: str,
        emitter: Emitter,
        on_graph_change: Literal["warn", "fail"] | None,
        *,
        claim: Claim | None = None,
    ) -> Driver: ...


__all__ = ("DEFAULT_POLL_INTERVAL", "ENDED_STATUSES", "HINTED_POLL_INTERVAL", "RunManager")

_RECOVER_BATCH = 64
"""Runs ``recover`` claims per ``claim_runs`` call (it calls again while batches come full)."""

ENDED_STATUSES = frozenset({"completed", "failed", "cancelled", "interrupted"})
"""Statuses at which a run has stopped: an event tail ends there."""

DEFAULT_POLL_INTERVAL = 0.05
"""Seconds between a tail's reads of the store, by default, when no hint can wake it."""

HINTED_POLL_INTERVAL = 1.0
"""Seconds between a tail's reads, by default, while hints from other processes reach the
store (PostgresStore's LISTEN): each commit of the trace's events wakes the tail at once."""

_TAIL_GRACE = 1.0
"""Seconds a tail keeps polling after the stored status says the run stopped, for its last
events (written just after the final checkpoint); past that, the driver died in between."""


class RunManager:
    """The executor's task group, its live runs and its graph registry."""

    def __init__(self, ex: _Executor, graphs: Iterable[Graph]) -> None:
        self.ex = ex
        self.graphs: dict[str, Graph] = {}
        for g in graphs:
            if not isinstance(g, Graph):
                raise TypeError(f"graphs= takes built gx.Graph objects, not {type(g).__name__}")
            other = self.graphs.get(g.name)
            if other is not None and other is not g:
                raise ValueError(f"graphs= has two graphs named {g.name!r}: names must be unique")
            self.graphs[g.name] = g
        self.live: dict[str, Driver] = {}
        """Runs driven in this process now, by trace id (whatever call started them)."""
        self._background: dict[str, Driver] = {}
        """Runs driven in the task group (start, recover): interrupted at shutdown."""
        self._tg: TaskGroup | None = None
        self.log = get_logger()

    # -- the task group ------------------------------------------------------------------------

    async def enter(self) -> None:
        if self._tg is not None:
            raise RuntimeError("this GraphExecutor is already in an `async with` block")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg

    async def exit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, self._tg = self._tg, None
        assert tg is not None
        # Interrupt first: a run cancelled by the task group's own cancel would be recorded
        # as "cancelled", which recover() leaves alone.
        for driver in list(self._background.values()):
            driver.interrupt()
        return await tg.__aexit__(exc_type, exc, tb)

    def _task_group(self, what: str) -> TaskGroup:
        if self._tg is None:
            raise GraphError(
                f"{what}() drives runs in the executor's task group: use it inside "
                "`async with gx.GraphExecutor(...) as ex:`"
            )
        return self._tg

    async def drive(self, driver: Driver, *, task_status: TaskStatus[None]) -> None:
        """Run ``driver`` to its end, known as live in this process meanwhile."""
        trace_id = driver.trace_id
        self.live[trace_id] = driver
        try:
            await driver.main(task_status=task_status)
        finally:
            if self.live.get(trace_id) is driver:
                del self.live[trace_id]

    async def _background_run(
        self,
        driver: Driver,
        ended: Callable[[Driver], None] | None = None,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        trace_id = driver.trace_id
        self._background[trace_id] = driver
        try:
            await self.drive(driver, task_status=task_status)
        except Exception as exc:  # noqa: BLE001 - an internal error: the others go on
            self.log.error("background run crashed", trace_id=trace_id, error=repr(exc))
        finally:
            if self._background.get(trace_id) is driver:
                del self._background[trace_id]
            if ended is not None:
                ended(driver)

    # -- starting and recovering ---------------------------------------------------------------

    async def start(
        self,
        graph: Graph,
        state: Any,
        trace_id: str | None,
        decisions: dict[str, Decision] | None,
    ) -> str:
        tg = self._task_group("start")
        trace_id = uuid.uuid4().hex if trace_id is None else trace_id
        driver = await self.ex._new_driver(
            graph, state, trace_id, decisions, self.ex._emitter(None, trace_id)
        )
        await tg.start(self._background_run, driver)
        # Return once the run is in the store, so another process can find it by trace id.
        await driver.recorded.wait()
        return driver.trace_id

    async def recover(self) -> list[str]:
        """One claim pass over the registry's graphs (``claim_runs``, as workers claim),
        driving every run claimed in the task group, batch after batch until the store has
        no more; the trace ids driven."""
        store = self.ex._need_store("recover")
        self._task_group("recover")
        names = sorted(self.graphs)
        resumed: list[str] = []
        if not names:
            return resumed  # claim_runs([]) would claim the runs of every graph
        while True:
            leases = new_leases(_RECOVER_BATCH, self.ex.lease_ttl)
            claims = await store.claim_runs(names, leases)
            for claim in claims:
                if await self.drive_claim(claim, leaves=False) is not None:
                    resumed.append(claim.trace_id)
            if len(claims) < len(leases):
                return resumed

    async def drive_claim(
        self,
        claim: Claim,
        *,
        leaves: bool,
        ended: Callable[[Driver], None] | None = None,
    ) -> Driver | None:
        """Drive a run ``claim_runs`` handed over, in the task group, holding the claimed
        lease (``leaves``: the driver leaves at a barrier with no decision; ``ended`` is called
        with the driver when it ends). None when it cannot be driven here: its graph is not
        in the registry, this process drives it already, or it cannot be resumed (logged);
        the lease is given back then."""
        tg = self._task_group("drive_claim")
        trace_id = claim.trace_id
        info = claim.run
        graph = self.graphs.get(info.graph_name)
        live = self.live.get(trace_id)
        if live is not None and (live.stopping or live.leaves):
            # Its driver here is ending (it leaves at barriers: it never waits here; or it is
            # stopping) and may still be writing its last events or taking a decision it found
            # after its wait was committed: the claim is driven once it is gone (it yields the
            # run to the claim's lease: LeaseLost at its unpark, and it leaves).
            await live.ended.wait()
            live = None
        if live is not None or graph is None:
            # A run driven here already waits at a barrier and polls its inbox itself.
            await _give_back(self.ex._need_store("drive_claim"), claim)
            return None
        emitter = self.ex._emitter(None, trace_id)
        try:
            driver = await self.ex._resumed_driver(graph, trace_id, emitter, None, claim=claim)
        except GraphError as exc:  # it released the lease
            self.log.error(
                "claimed run cannot be resumed: recorded failed",
                trace_id=trace_id,
                status=info.status,
                error=str(exc),
                error_type=type(exc).__name__,
            )
            await self._mark_unresumable(claim, exc)
            return None
        driver.leaves = leaves
        await tg.start(self._background_run, driver, ended)
        return driver

    # -- steering ------------------------------------------------------------------------------

    async def decide(self, trace_id: str, barrier_id: str, decision: Decision) -> None:
        driver = self.live.get(trace_id)
        if driver is not None and not driver.finished:
            driver.offer(barrier_id, decision, wildcard=False)
            return
        store = self.ex._need_store("decide")
        info = await store.get_run(trace_id)
        graph = self.graphs.get(info.graph_name) if info is not None else None
        if info is not None and graph is not None and info.status not in FINISHED_STATUSES:
            if "/" in barrier_id:
                # A barrier inside a child run: its path names a barrier of a child graph
                # (the check decisions given up front get); the store checks the rest.
                check_path_decision(
                    graph, barrier_id, wildcard=False, trace_id=trace_id, decision=decision
                )
            else:
                # The one decision check, with the graph at hand (the node's kind, an Edit
                # against the typed state); the store repeats the graph-free part in its
                # transaction.
                check_request(
                    barrier_id,
                    decision,
                    every_occurrence=False,
                    trace_id=trace_id,
                    graph=graph,
                    counts=info.barrier_counts,
                    pending=info.pending_barrier,
                    decided=(),
                )
        await store.submit_decision(trace_id, barrier_id, decision)

    async def cancel(self, trace_id: str) -> None:
        driver = self.live.get(trace_id)
        if driver is not None and not driver.finished:
            driver.request_cancel()
            return
        store = self.ex._need_store("cancel")
        while True:
            if await store.request_cancel(trace_id):
                return  # its driver (another process) takes it at its next poll
            try:
                await self._mark_cancelled(store, trace_id)
                return
            except RunLocked:
                continue  # a driver took the run meanwhile: ask it instead

    async def _mark_cancelled(self, store: CheckpointStore, trace_id: str) -> None:
        """Record a run no one drives as cancelled: one delta record, no step, same state."""
        keeper = LeaseKeeper(store, trace_id, self.ex.lease_ttl)
        info = await keeper.acquire()
        try:
            if info is None:
                raise RunNotFound(
                    f"no run with trace id {trace_id!r} in the store", trace_id=trace_id
                )
            if info.status == "completed":
                raise RunFinished(
                    f"run {trace_id!r} already completed: there is nothing to cancel",
                    trace_id=trace_id,
                )
            if info.status == "cancelled":
                return
            await self._record_stop(
                store,
                keeper,
                info,
                "cancelled",
                "cancel",
                "Cancelled",
                f"run {trace_id!r} was cancelled",
            )
        finally:
            await keeper.release()

    async def _mark_unresumable(self, claim: Claim, exc: GraphError) -> None:
        """A claimed run that cannot be resumed here (damaged checkpoints, a graph that
        changed under it) is recorded failed with the error, so no claim hands it out again
        (a queued or interrupted run stays claimable until recorded otherwise); an operator
        forks it, or resumes it with a fixed graph. The claimed lease was given back: the
        lease is taken again, and nothing is written if the run moved on meanwhile."""
        store = self.ex._need_store("drive_claim")
        keeper = LeaseKeeper(store, claim.trace_id, self.ex.lease_ttl)
        try:
            info = await keeper.acquire()
            if info is None or info.last_seq != claim.run.last_seq:
                return  # another driver wrote since: it is theirs now
            await self._record_stop(
                store,
                keeper,
                info,
                "failed",
                "unresumable",
                type(exc).__name__,
                f"run {claim.trace_id!r} cannot be resumed: {exc.message}",
            )
        except GraphError as again:  # RunLocked: another driver has it now
            self.log.warning(
                "unresumable run not recorded failed", trace_id=claim.trace_id, error=str(again)
            )
        finally:
            await keeper.release()

    async def _record_stop(
        self,
        store: CheckpointStore,
        keeper: LeaseKeeper,
        info: RunInfo,
        status: str,
        trigger: str,
        error_type: str,
        message: str,
    ) -> None:
        """Record that a run no one drives stopped (cancelled, or failed without running):
        one delta record on its last one (no step, same state; built from the runs row when
        the last record cannot be read), its commit releasing ``keeper``'s lease, and the
        GraphFailed event that ends its tails."""
        trace_id = info.trace_id
        failure = ErrorInfo(type=error_type, message=message, node=None)
        t = now()
        try:
            rows = await store.load_chain(trace_id)
            if not rows:
                raise RunNotFound(f"run {trace_id!r} has no checkpoint", trace_id=trace_id)
            last = decode_body(rows[-1])
        except CheckpointError:
            if status != "failed":
                raise
            last = CheckpointBody(  # damaged: what the runs row knows is enough to stop it
                trace_id=trace_id,
                seq=info.last_seq,
                graph_name="",
                graph_hash="",
                step=info.step,
                next_node=info.next_node,
                status=status,
                trigger=trigger,
                created_at=t,
                barrier_counts=dict(info.barrier_counts),
            )
        seq = max(info.last_seq, last.seq) + 1
        body = msgspec.structs.replace(
            last,
            seq=seq,
            graph_name="",
            graph_hash="",
            status=status,
            trigger=trigger,
            created_at=t,
            steps=[],
            error=f"{error_type}: {message}",
            failure=failure,
            parent=None,
            reducers={},
            barrier_nodes=[],
            input=None,
        )
        data, crc = encode_body(body)
        row = StoredCheckpoint(
            trace_id=trace_id,
            seq=seq,
            kind="delta",
            step=last.step,
            next_node=last.next_node,
            status=status,
            trigger=trigger,
            created_at=t,
            body=data,
            checksum=crc,
        )
        run = msgspec.structs.replace(
            info, status=status, last_seq=seq, updated_at=t, ready_at=None, lease=None
        )
        state: Any = None
        try:
            state = (await restore(store, trace_id, graph=self.graphs.get(info.graph_name))).state
        except GraphError:
            pass  # custom reducers and no graph, or damage: the event goes without the state
        log = EventLog(store, trace_id)
        await log.open()
        log.stamp(
            GraphFailed(
                trace_id=trace_id,
                step=last.step,
                error=failure,
                state=state,
                status=status,  # type: ignore[arg-type]  # cancelled or failed
            )
        )
        await store.save([row], run, lease=keeper.lease, release=True, events=log.take())
        log.written(True)  # wakes this process's tails
        keeper.released = True

    # -- the event tail ------------------------------------------------------------------------

    async def events(self, trace_id: str, after: int | None) -> AsyncIterator[GraphEvent]:
        store = self.ex.store
        topic = events_topic(trace_id)
        cursor = after or 0
        ended = False
        """The last event yielded ends a run (the tail ends unless later events are recorded:
        a trace resumed after an interruption, a conversation's next turn)."""
        ended_since: float | None = None
        first = True
        while True:
            driver = self.live.get(trace_id)
            emitter = driver.rec.emitter if driver is not None else None
            log = emitter.log if emitter is not None else None
            if driver is not None and log is not None and _tails_live(driver):
                # In this process: what the store has, what the driver has not written yet,
                # then every new event straight from the driver, until the driver ends.
                snapshot, recv = log.subscribe()
                with recv:
                    stored: list[GraphEvent] = []
                    if store is not None:
                        stored = await read_events(store, trace_id, cursor)
                    for event in [*stored, *snapshot]:
                        if event.event_id > cursor:
                            cursor = event.event_id
                            ended = isinstance(event, TERMINAL_EVENTS)
                            yield event
                    async for event in recv:
                        if event.event_id > cursor:
                            cursor = event.event_id
                            ended = isinstance(event, TERMINAL_EVENTS)
                            yield event
                first = False
                if store is None:
                    return
                continue  # the store may hold more (its final write came after the last send)
            if store is None:
                if first:
                    raise RunNotFound(
                        f"no run with trace id {trace_id!r} is driven in this process, and the "
                        "executor has no store to read recorded events from",
                        trace_id=trace_id,
                    )
                return
            found = await read_events(store, trace_id, cursor)
            for event in found:
                cursor = event.event_id
                ended = isinstance(event, TERMINAL_EVENTS)
                yield event
            if found:
                ended_since = None
                first = False
                continue
            if ended:
                return  # the run's last recorded event ends it, and nothing came after
            if _tails_live(self.live.get(trace_id)):
                continue  # driven here now (recovered meanwhile): follow it live
            info = await store.get_run(trace_id)
            if info is None:
                if first:
                    raise RunNotFound(
                        f"no run with trace id {trace_id!r} in the store", trace_id=trace_id
                    )
            elif info.status in ENDED_STATUSES:
                # Stopped, but its terminal event is not recorded: it comes just after the final
                # checkpoint, or never if the driver died in between.
                t = time.monotonic()
                if ended_since is None:
                    ended_since = t
                elif t - ended_since > max(_TAIL_GRACE, 4 * self.ex.event_flush_interval):
                    return
            else:
                ended_since = None
            first = False
            # Until a hint says new events were committed (by a driver in this process, or in
            # another through a store that carries hints: Postgres), else poll.
            await store.wait_for(topic, self._poll_interval(store))

    def _poll_interval(self, store: CheckpointStore) -> float:
        """``event_poll_interval``, or by default 0.05 s, and 1 s while the store carries
        hints from other processes (a poll is then only the fallback for a lost hint)."""
        poll = self.ex.event_poll_interval
        if poll is not None:
            return poll
        if isinstance(store, StoreBase) and store.hints_across_processes:
            return HINTED_POLL_INTERVAL
        return DEFAULT_POLL_INTERVAL


def _tails_live(driver: Driver | None) -> bool:
    """The driver runs in this process and its events can be followed live."""
    if driver is None or driver.finished:
        return False
    emitter = driver.rec.emitter
    return emitter is not None and emitter.log is not None


def new_leases(count: int, ttl: float) -> list[Lease]:
    """Fresh leases for ``claim_runs``: one new owner id each, in this process."""
    host, pid, started = this_process()
    return [Lease(uuid.uuid4().hex, ttl, 0, host, pid, started) for _ in range(count)]


async def _give_back(store: CheckpointStore, claim: Claim) -> None:
    with anyio.CancelScope(shield=True):
        await store.release_lease(claim.trace_id, claim.lease.owner)


def new_log(ex: _Executor, trace_id: str) -> EventLog:
    """The event log of a run this executor drives."""
    return EventLog(
        ex.store if ex.record_events else None,
        trace_id,
        record_custom=ex.record_custom_events,
        flush_interval=ex.event_flush_interval,
    )
