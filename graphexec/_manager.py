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
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

from ._barrier_ids import stored_key
from ._decisions import Decision
from ._eventcodec import read_events
from ._eventlog import EventLog
from ._events import TERMINAL_EVENTS, ErrorInfo, GraphEvent, GraphFailed
from ._graph import Graph
from ._lease import LeaseKeeper
from ._log import get_logger
from ._restore import restore
from ._run.decisions import check_request
from .checkpoint._base import FINISHED_STATUSES, CheckpointStore, StoreBase
from .checkpoint._hints import events_topic
from .checkpoint._record import (
    RunInfo,
    StoredCheckpoint,
    decode_body,
    encode_body,
    now,
)
from .exceptions import GraphError, RunFinished, RunLocked, RunNotFound

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
    ) -> Driver: ...


__all__ = ("DEFAULT_POLL_INTERVAL", "ENDED_STATUSES", "HINTED_POLL_INTERVAL", "RunManager")

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
        self, driver: Driver, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
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
        store = self.ex._need_store("recover")
        tg = self._task_group("recover")
        resumed: list[str] = []
        for status in ("interrupted", "running", "waiting"):
            for info in await store.runs(status=status, limit=1 << 62):
                trace_id = info.trace_id
                graph = self.graphs.get(info.graph_name)
                if trace_id in self.live or graph is None:
                    continue
                if status == "waiting" and not await _decision_arrived(store, info):
                    continue
                emitter = self.ex._emitter(None, trace_id)
                try:
                    driver = await self.ex._resumed_driver(graph, trace_id, emitter, None)
                except RunLocked:
                    continue  # a live driver elsewhere holds it
                except GraphError as exc:
                    self.log.warning(
                        "run not recovered", trace_id=trace_id, error=str(exc), status=status
                    )
                    continue
                await tg.start(self._background_run, driver)
                resumed.append(trace_id)
        return resumed

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
            # The one decision check, with the graph at hand (the node's kind, an Edit against
            # the typed state); the store repeats the graph-free part in its transaction.
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
            rows = await store.load_chain(trace_id)
            if not rows:
                raise RunNotFound(f"run {trace_id!r} has no checkpoint", trace_id=trace_id)
            last = decode_body(rows[-1])
            seq = max(info.last_seq, last.seq) + 1
            t = now()
            message = f"run {trace_id!r} was cancelled"
            body = msgspec.structs.replace(
                last,
                seq=seq,
                graph_name="",
                graph_hash="",
                status="cancelled",
                trigger="cancel",
                created_at=t,
                steps=[],
                error=f"Cancelled: {message}",
                failure=ErrorInfo(type="Cancelled", message=message, node=None),
                parent=None,
                reducers={},
                barrier_nodes=[],
            )
            data, crc = encode_body(body)
            row = StoredCheckpoint(
                trace_id=trace_id,
                seq=seq,
                kind="delta",
                step=last.step,
                next_node=last.next_node,
                status="cancelled",
                trigger="cancel",
                created_at=t,
                body=data,
                checksum=crc,
            )
            run = msgspec.structs.replace(info, status="cancelled", last_seq=seq, updated_at=t)
            state: Any = None
            try:
                state = (
                    await restore(store, trace_id, graph=self.graphs.get(info.graph_name))
                ).state
            except GraphError:
                pass  # custom reducers and no graph: the event says cancelled without the state
            log = EventLog(store, trace_id)
            await log.open()
            log.stamp(
                GraphFailed(
                    trace_id=trace_id,
                    step=last.step,
                    error=ErrorInfo(type="Cancelled", message=message, node=None),
                    state=state,
                    status="cancelled",
                )
            )
            await store.save([row], run, lease=keeper.lease, release=True, events=log.take())
            log.written(True)  # wakes this process's tails
            keeper.released = True
        finally:
            await keeper.release()

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


async def _decision_arrived(store: CheckpointStore, info: RunInfo) -> bool:
    """A waiting run needs a driver: a decision for its barrier came, or its timeout passed."""
    rows = await store.load_chain(info.trace_id)
    if not rows:
        return False
    body = decode_body(rows[-1])
    pending = body.pending_barrier
    if pending is None:
        return False
    if pending.deadline is not None and pending.deadline <= now():
        return True
    if pending.barrier_id in body.decisions or pending.node in body.decisions:
        return True  # the run holds it already (a wildcard is kept under the node's name)
    keys = (pending.barrier_id, stored_key(pending.node, None))  # inbox: "node#3", "node#*"
    found = await store.decisions_after(info.trace_id, body.decision_cursor)
    return any(d.barrier_id in keys and d.decision is not None for d in found)


def new_log(ex: _Executor, trace_id: str) -> EventLog:
    """The event log of a run this executor drives."""
    return EventLog(
        ex.store if ex.record_events else None,
        trace_id,
        record_custom=ex.record_custom_events,
        flush_interval=ex.event_flush_interval,
    )
