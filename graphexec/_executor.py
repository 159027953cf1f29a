"""GraphExecutor: starting, streaming, resuming and forking runs, and reading them back."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._apply import TornUpdate, apply_changes
from ._checkpointer import Checkpointer, NullCheckpointer, reducer_names
from ._decisions import Decision
from ._emit import Emitter
from ._events import GraphEvent
from ._graph import Graph
from ._history import history_page
from ._manager import RunManager, new_log
from ._policy import CheckpointPolicy
from ._restore import Restored, restore
from ._retry import Clock
from ._run import Driver, GraphResult, Position, Run
from ._run.attempts import Resilience
from ._run.child import pending_barriers
from ._run.decisions import check_path_decision, check_request, initial_decisions
from ._runstate import RunState, barrier_info, failure_of
from ._state import changes_of
from ._telemetry import Telemetry
from ._values import check_trace_id
from .checkpoint._base import FINISHED_STATUSES, CheckpointStore
from .checkpoint._record import (
    CheckpointSummary,
    Claim,
    ParentRef,
    PendingBarrier,
    RunInfo,
)
from .exceptions import (
    GraphChanged,
    GraphChangedWarning,
    GraphError,
    InvalidGraph,
    PlanStale,
    RunExists,
    RunFinished,
    RunNotFound,
    StoreRequired,
)

if TYPE_CHECKING:
    from ._rerun.plan import RerunPlan

__all__ = ("GraphExecutor", "RunState")


class GraphExecutor:
    """Runs graphs.

    Args:
        store: where checkpoints go (``gx.SQLiteStore(path)``, ``gx.MemoryStore()``); None: no
            checkpoints, everything else works.
        policy: when to checkpoint (default ``CheckpointPolicy()``).
        max_steps: a run that would take more steps fails with StepsExceeded (default 1000).
        lease_ttl: seconds a run's lease on its trace outlives its last renewal (default 30).
        decision_poll_interval: how often a waiting run polls the store for decisions submitted
            from another process (default 0.25 s).
        event_buffer: events buffered for a slow consumer before the run waits (default 64).
        execution_log: keep ``GraphResult.execution_log`` (default True).
        on_graph_change: ``"warn"`` (default) or ``"fail"`` when a resumed run's graph differs
            structurally from the checkpointed one (a missing next node always fails).
        graphs: the registry, by graph name, that ``recover()`` (and workers, the CLI, the
            server) use to find a stored run's graph.
        record_events: record every run's events in the store (default True; needs a store),
            for ``ex.events`` in any process.
        record_custom_events: also record ``Custom`` events (``ctx.emit``: tokens); default
            True. Live consumers and in-process tails get them either way.
        event_flush_interval: between checkpoints, recorded events are written every this many
            seconds (default 0.05); at a checkpoint they ride its transaction.
        event_poll_interval: how often ``ex.events`` polls the store for a run driven in
            another process. Default: 0.05 s, or 1 s while the store carries wake-up hints
            between processes (PostgresStore's LISTEN/NOTIFY: a commit of the run's events
            wakes the tail at once, and the poll only covers a lost hint).

    ``async with gx.GraphExecutor(...) as ex:`` gives it a task group for ``ex.start`` and
    ``ex.recover``; leaving the block checkpoints their runs and stops them as
    ``"interrupted"`` (a run waiting at a barrier stays ``"waiting"``).
        invalidate_on_resume: on resume, run again every completed execution whose node's
            fingerprint changed since it ran, and what depends on it (default False: a resume
            continues where the run stopped).
        clock: the wall clock and sleep that retry backoffs and circuit-breaker cool-downs
            use (default: the real ones; ``gx.testing.FakeClock()`` in tests).
        telemetry: spans for every run segment and node attempt, e.g.
            ``graphexec.otel.OpenTelemetry(tracer_provider=...)`` (default None: none, at no
            cost).
    """

    def __init__(
        self,
        *,
        store: CheckpointStore | None = None,
        policy: CheckpointPolicy | None = None,
        max_steps: int = 1000,
        lease_ttl: float = 30.0,
        decision_poll_interval: float = 0.25,
        event_buffer: int = 64,
        execution_log: bool = True,
        on_graph_change: Literal["warn", "fail"] = "warn",
        graphs: Iterable[Graph] = (),
        record_events: bool = True,
        record_custom_events: bool = True,
        event_flush_interval: float = 0.05,
        event_poll_interval: float | None = None,
        invalidate_on_resume: bool = False,
        clock: Clock | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        if max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if event_buffer < 1:
            raise ValueError("event_buffer must be >= 1")
        if on_graph_change not in ("warn", "fail"):
            raise ValueError("on_graph_change must be 'warn' or 'fail'")
        self.store = store
        self.policy = policy or CheckpointPolicy()
        self.max_steps = max_steps
        self.lease_ttl = lease_ttl
        self.decision_poll_interval = decision_poll_interval
        self.event_buffer = event_buffer
        self.execution_log = execution_log
        self.on_graph_change = on_graph_change
        self.record_events = record_events
        self.record_custom_events = record_custom_events
        if event_flush_interval <= 0 or (
            event_poll_interval is not None and event_poll_interval <= 0
        ):
            raise ValueError("event_flush_interval and event_poll_interval must be > 0")
        self.event_flush_interval = event_flush_interval
        self.event_poll_interval = event_poll_interval
        self._manager = RunManager(self, graphs)
        self.invalidate_on_resume = invalidate_on_resume
        self._resilience = Resilience(clock)
        """The clock and the circuit breakers, shared by every run of this executor."""
        self.telemetry = telemetry

    @property
    def graphs(self) -> dict[str, Graph]:
        """The graph registry, by name (``graphs=``)."""
        return self._manager.graphs

    async def __aenter__(self) -> Self:
        await self._manager.enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._manager.exit(exc_type, exc, tb)

    # -- runs apart from their consumer ------------------------------------------------------

    async def start(
        self,
        graph: Graph,
        state: Any = None,
        *,
        trace_id: str | None = None,
        decisions: Mapping[str, Decision] | None = None,
        queue: bool = False,
    ) -> str:
        """Start a run driven in the executor's task group, with or without a consumer.

        Returns its trace id once its first checkpoint is committed (another process can then
        find it). Needs ``async with gx.GraphExecutor(...) as ex``. Follow it with
        ``ex.events(trace_id)``; steer it with ``ex.decide`` and ``ex.cancel``.

        ``queue=True``: record the run as ``"queued"`` for a worker (``gx.Worker``, ``graphexec
        worker``) to claim and drive, instead of driving it here; needs a store, not the
        ``async with`` block. The trace id of a completed trace queues its next turn.
        """
        if queue:
            return await self._queue(
                graph, state, trace_id, dict(decisions) if decisions is not None else None
            )
        return await self._manager.start(
            graph, state, trace_id, dict(decisions) if decisions is not None else None
        )

    async def decide(self, trace_id: str, barrier_id: str, decision: Decision) -> None:
        """Decide barrier ``"<node>#<n>"`` of a run: the live run if this process drives it,
        else through the store (its driver, or the next resume, picks it up). Checked by the
        one decision check (``check_request``; with the run's graph when it is in ``graphs=``):
        InvalidDecision, NodeNotFound, StateError, RunNotFound, RunFinished."""
        await self._manager.decide(trace_id, barrier_id, decision)

    async def cancel(self, trace_id: str) -> None:
        """Cancel a run from any process: the live run if this process drives it; else a
        request its driving process takes at its next poll (``decision_poll_interval``); a run
        no live driver holds (waiting at a barrier: its lease is parked; interrupted; failed;
        its driver's process on this host is dead, or its lease expired) is recorded
        ``"cancelled"`` at once."""
        await self._manager.cancel(trace_id)

    async def recover(self) -> list[str]:
        """Resume, in the executor's task group, every run of the store that needs a driver and
        whose graph is in ``graphs=``: queued runs, interrupted runs, running runs whose owner
        is gone (its process on this host is dead: at once; elsewhere: its lease expired),
        waiting runs (their lease is parked) whose decision arrived or whose timeout passed.
        Returns their trace ids. It claims them as workers do (``store.claim_runs``), so a run
        another live process holds is left alone and no two processes resume the same run; a
        claimed run that cannot be resumed (damaged, or its graph changed under it) is
        recorded failed."""
        return await self._manager.recover()

    def events(self, trace_id: str, *, after: int | None = None) -> AsyncIterator[GraphEvent]:
        """A trace's events, from any process sharing the store: those recorded after event id
        ``after`` (all without it), then the live ones, ending after the run's
        ``GraphComplete``, ``GraphFailed`` or ``GraphInterrupted``. A run waiting at a barrier
        keeps the tail open (the events after its decision follow)."""
        return self._manager.events(trace_id, after)

    async def _queue(
        self,
        graph: Graph,
        state: Any,
        trace_id: str | None,
        decisions: dict[str, Decision] | None,
    ) -> str:
        """Record a run (or a conversation's next turn) as queued: the checkpoint a start would
        build on, with status and trigger ``"queued"`` and the input, its commit releasing the
        lease (the store makes it ready for ``claim_runs`` and hints ``"work"``)."""
        self._need_store("start(queue=True)")
        driver = await self._new_driver(graph, state, trace_id, decisions, None)
        driver.discard()  # only its position and state are used: a worker drives the run
        ckpt = driver.ckpt
        assert isinstance(ckpt, Checkpointer)
        driver.pos.status = "queued"
        try:
            await ckpt.save(driver.pos, driver.state, "queued", final=True, input=state)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await ckpt.keeper.release()
            raise
        return driver.trace_id

    # -- starting runs -----------------------------------------------------------------------

    async def execute(
        self,
        graph: Graph,
        state: Any = None,
        *,
        trace_id: str | None = None,
        decisions: Mapping[str, Decision] | None = None,
    ) -> GraphResult:
        """Run to the end and return the result, or raise the run's GraphError.

        A graph with barriers needs ``decisions``: barrier ids (``"approve#1"``) or barrier node
        names (every occurrence) mapped to decisions; otherwise use ``execute_stream``.
        """
        if isinstance(graph, Graph) and graph.barrier_nodes and decisions is None:
            raise InvalidGraph(
                f"graph {graph.name!r} has barrier nodes ({', '.join(sorted(graph.barrier_nodes))})"
                ": use execute_stream() and decide through run.handle, or pass decisions= to "
                "execute()"
            )
        trace_id = uuid.uuid4().hex if trace_id is None else trace_id
        emitter = (
            self._emitter(None, trace_id) if self.store is not None and self.record_events else None
        )
        driver = await self._new_driver(graph, state, trace_id, decisions, emitter)
        driver.must_be_decided = True
        await self._manager.drive(driver, task_status=anyio.TASK_STATUS_IGNORED)
        result = driver.result
        assert result is not None
        if result.error is not None:
            raise result.error
        return result

    @asynccontextmanager
    async def execute_stream(
        self,
        graph: Graph,
        state: Any = None,
        *,
        trace_id: str | None = None,
        decisions: Mapping[str, Decision] | None = None,
    ) -> AsyncIterator[Run]:
        """Start a run and stream its events: ``async with ex.execute_stream(g, s) as run:``.

        Leaving the block early cancels the run after checkpointing it (status ``"waiting"`` if
        it waited at a barrier, else ``"cancelled"``); it can then be resumed.
        """
        trace_id = uuid.uuid4().hex if trace_id is None else trace_id
        send, recv = anyio.create_memory_object_stream[GraphEvent](self.event_buffer)
        try:
            driver = await self._new_driver(
                graph, state, trace_id, decisions, self._emitter(send, trace_id)
            )
        except BaseException:
            send.close()
            recv.close()
            raise
        async with self._running(driver, recv) as run:
            yield run

    @asynccontextmanager
    async def resume_from(
        self,
        graph: Graph,
        trace_id: str,
        *,
        on_graph_change: Literal["warn", "fail"] | None = None,
        take_over: bool = False,
    ) -> AsyncIterator[Run]:
        """Continue a checkpointed run by its trace id, streaming its events.

        ``take_over=True`` takes the run's lease even from an owner that looks alive (an
        operator who knows it is gone, say on another host before its lease expires); that
        owner's next write fails with LeaseLost. A dead owner on this host never blocks.

        It continues at the saved next node with the same step count, barrier counters and
        unused decisions; a run that waited at a barrier waits again with the same barrier id.
        Raises on entry: RunNotFound, RunFinished, RunLocked, CheckpointError, GraphChanged.
        """
        check_trace_id(trace_id)
        send, recv = anyio.create_memory_object_stream[GraphEvent](self.event_buffer)
        try:
            driver = await self._resumed_driver(
                graph, trace_id, self._emitter(send, trace_id), on_graph_change, take_over=take_over
            )
        except BaseException:
            send.close()
            recv.close()
            raise
        async with self._running(driver, recv) as run:
            yield run

    @asynccontextmanager
    async def fork(
        self,
        graph: Graph,
        trace_id: str,
        seq: int,
        *,
        update: Mapping[str, Any] | None = None,
        new_trace_id: str | None = None,
        decisions: Mapping[str, Decision] | None = None,
    ) -> AsyncIterator[Run]:
        """Start a new run (new trace id) from checkpoint ``seq`` of ``trace_id``.

        ``update`` is applied through the reducers first (time travel with an edit). The
        original run is untouched. The fork does not inherit the source's unused decisions:
        it waits at its barriers unless ``decisions`` (checked as execute's) decide them.
        """
        store = self._need_store("fork")
        check_trace_id(trace_id)
        if new_trace_id is not None:
            check_trace_id(new_trace_id)
        restored = await restore(store, trace_id, seq=seq, graph=graph)
        body = restored.body
        self._check_graph(
            graph,
            restored.graph_hash,
            body.next_node,
            body.pending_barrier,
            trace_id,
            self.on_graph_change,
        )
        state = restored.state if graph.state_type is None else dict(restored.state)
        changes: list[tuple[str, Any]] = []
        if update:
            try:
                changes = apply_changes(
                    graph.spec,
                    state,
                    list(update.items()),
                    node=None,
                    writer=f"fork update of trace {trace_id!r} seq {seq}",
                )
            except TornUpdate as torn:
                raise torn.error from torn.error.__cause__
        new_id = new_trace_id or uuid.uuid4().hex
        early = initial_decisions(graph, decisions, new_id)
        send, recv = anyio.create_memory_object_stream[GraphEvent](self.event_buffer)
        emitter = self._emitter(send, new_id)
        ckpt = self._checkpointer(graph, new_id, emitter, ParentRef(trace_id=trace_id, seq=seq))
        if changes:
            ckpt.note_step(body.step, "__fork__", changes)
        await _claim_new_trace(store, ckpt, new_id, send, recv)
        driver = self._driver_at(
            graph,
            state,
            new_id,
            # Decisions were made for the source run (its inbox too): the fork starts with
            # only those given to fork(), and an empty inbox.
            Position.of(body, decisions=early, decision_cursor=0),
            emitter,
            ckpt,
            start_trigger="fork",
            resumed=False,
            parent=trace_id,
            linked_context=restored.trace_context,
        )
        async with self._running(driver, recv) as run:
            yield run

    # -- re-running from a node -------------------------------------------------------------

    async def plan_rerun(
        self,
        graph: Graph,
        trace_id: str,
        from_node: str,
        *,
        update: Mapping[str, Any] | None = None,
    ) -> RerunPlan:
        """What ``rerun(graph, trace_id, from_node, update=update)`` would do, per execution of
        the source trace: reuse, run (with the reasons, traced to a root cause) or not reached.
        Writes nothing and takes no lease; ``print(plan)`` shows a table.
        """
        from ._rerun.plan import make_plan
        from ._rerun.source import load_source

        store = self._need_store("plan_rerun")
        check_trace_id(trace_id)
        source = await load_source(store, trace_id, graph, inputs=False)
        return make_plan(source, graph, from_node, dict(update) if update else None)

    @asynccontextmanager
    async def rerun(
        self,
        graph: Graph,
        trace_id: str,
        from_node: str,
        *,
        update: Mapping[str, Any] | None = None,
        plan: RerunPlan | None = None,
        new_trace_id: str | None = None,
    ) -> AsyncIterator[Run]:
        """Run trace ``trace_id`` again from ``from_node`` as a new trace, reusing every node
        execution whose fingerprint and read values are unchanged (see ``plan_rerun``).

        ``update`` is applied through the reducers just before ``from_node`` first runs. The
        new trace records ``rerun_of`` lineage (``RunInfo.rerun_of``; its first checkpoint's
        trigger is ``"rerun"``). With ``plan``, PlanStale if the source or the graph changed
        since it was made. The source is only read: completed, failed, waiting or cancelled.
        """
        from ._rerun.plan import check_target, make_plan
        from ._rerun.reuse import Reuse
        from ._rerun.source import load_source

        store = self._need_store("rerun")
        check_trace_id(trace_id)
        if new_trace_id is not None:
            check_trace_id(new_trace_id)
        changes = dict(update) if update else None
        source = await load_source(store, trace_id, graph, inputs=True)
        if plan is not None:
            _check_plan(plan, make_plan(source, graph, from_node, changes))
        else:
            check_target(source, graph, from_node)
            if changes and graph.spec.checks is not None:
                for key, value in changes.items():  # typed state: refuse a bad update now
                    graph.spec.check(key, value, node=None)
        state: dict[str, Any] = msgspec.msgpack.decode(msgspec.msgpack.encode(source.initial))
        if graph.state_type is not None:
            state = graph.spec.restored(state)
        new_id = new_trace_id or uuid.uuid4().hex
        send, recv = anyio.create_memory_object_stream[GraphEvent](self.event_buffer)
        emitter = Emitter(send)
        ckpt = self._checkpointer(
            graph,
            new_id,
            emitter,
            ParentRef(trace_id=trace_id, seq=source.last_seq, kind="rerun"),
        )
        await _claim_new_trace(store, ckpt, new_id, send, recv)
        driver = self._driver_at(
            graph,
            state,
            new_id,
            # Like a fork: the re-run decides its barriers anew (those it reuses keep the
            # source's decision), with an empty inbox.
            Position.of(source.first, decisions={}, decision_cursor=0),
            emitter,
            ckpt,
            start_trigger="rerun",
            resumed=False,
            parent=trace_id,
            linked_context=source.first.trace_context,
        )
        driver.reuse = Reuse(source, from_node, list(changes.items()) if changes else None)
        async with self._running(driver, recv) as run:
            yield run

    # -- reading runs back -------------------------------------------------------------------

    async def get_state(
        self, trace_id: str, *, seq: int | None = None, graph: Graph | None = None
    ) -> RunState:
        """The run as last checkpointed (or at checkpoint ``seq``): state, status, step, ...

        ``graph`` is needed only to replay custom reducers, or to get typed state back.
        """
        store = self._need_store("get_state")
        check_trace_id(trace_id)
        restored = await restore(store, trace_id, seq=seq, graph=graph)
        body = restored.body
        state: Any = restored.state
        if graph is not None and graph.state_type is not None:
            state = graph.spec.public(restored.state)
        return RunState(
            trace_id=trace_id,
            state=state,
            status=body.status,  # type: ignore[arg-type]  # a RunStatus, stored as text
            step=body.step,
            next_node=body.next_node,
            pending_barrier=barrier_info(body.pending_barrier),
            seq=body.seq,
            graph_name=restored.graph_name,
            graph_hash=restored.graph_hash,
            updated_at=body.created_at,
            error=failure_of(body),
            parent=restored.parent,
            turn=body.turn,
            pending_barriers=[
                info
                for p in pending_barriers(body.pending_barrier, body.children)
                if (info := barrier_info(p)) is not None
            ],
        )

    async def history(
        self,
        trace_id: str,
        *,
        limit: int | None = None,
        before: int | None = None,
        values: bool = False,
        graph: Graph | None = None,
    ) -> list[CheckpointSummary]:
        """A run's checkpoints, oldest first (seq, kind, step, next node, trigger, ...).

        ``before=seq``: only checkpoints with a smaller seq; ``limit``: the newest ``limit`` of
        those; ``values=True``: each summary's ``state`` holds the state at that checkpoint.
        """
        store = self._need_store("history")
        check_trace_id(trace_id)
        return await history_page(
            store, trace_id, limit=limit, before=before, values=values, graph=graph
        )

    async def runs(
        self, *, status: str | None = None, graph_name: str | None = None, limit: int = 100
    ) -> list[RunInfo]:
        """Runs in the store, most recently updated first."""
        return await self._need_store("runs").runs(
            status=status, graph_name=graph_name, limit=limit
        )

    # -- internals ---------------------------------------------------------------------------

    def _emitter(self, stream: Any, trace_id: str) -> Emitter:
        """The event path of a run: its log (ids, record, live tails), then ``stream`` (the
        consumer's; None for a run with no consumer)."""
        return Emitter(stream, new_log(self, trace_id))

    async def _resumed_driver(
        self,
        graph: Graph,
        trace_id: str,
        emitter: Emitter,
        on_graph_change: Literal["warn", "fail"] | None,
        *,
        take_over: bool = False,
        claim: Claim | None = None,
    ) -> Driver:
        """A driver that continues ``trace_id`` (resume_from, recover, workers); it holds the
        lease (``take_over``: even from an owner that looks alive; ``claim``: the lease
        ``claim_runs`` granted, with the index row it read). A queued run starts as a fresh run
        would (GraphStart not resumed, with the recorded input; a ``"start"`` record).
        Raises RunNotFound, RunFinished, RunLocked, CheckpointError, GraphChanged."""
        store = self._need_store("resume_from")
        ckpt = self._checkpointer(graph, trace_id, emitter, None)
        if claim is None:
            info = await ckpt.keeper.acquire(take_over=take_over)
        else:
            info = ckpt.keeper.adopt(claim)
        try:
            if info is None:
                raise RunNotFound(
                    f"no run with trace id {trace_id!r} in the store", trace_id=trace_id
                )
            if info.status in FINISHED_STATUSES:
                raise RunFinished(
                    f"run {trace_id!r} already completed; fork it from one of its checkpoints "
                    "(ex.fork) to run it again",
                    trace_id=trace_id,
                )
            ckpt.parent = info.parent
            restored = await restore(store, trace_id, graph=graph, run=info)
            body = restored.body
            if (
                body.status == "failed"
                and body.next_node is None
                and body.trigger != "completion_failed"
            ):
                raise RunFinished(
                    f"run {trace_id!r} failed after its last node ran ({body.error}); nothing is "
                    "left to resume: fork it from an earlier checkpoint",
                    trace_id=trace_id,
                )
            self._check_graph(
                graph,
                restored.graph_hash,
                body.next_node,
                body.pending_barrier,
                trace_id,
                on_graph_change or self.on_graph_change,
            )
            self._prime(ckpt, restored)
            queued = body.status == "queued"
            if queued:
                start_trigger: str | None = "start" if body.turn == 1 else "turn"
                ckpt.created_at = info.created_at
            elif body.pending_barrier is not None or body.next_node is None:
                # A run whose completion checkpoint failed has no node left: the resume only
                # writes that checkpoint (no "resume" record first).
                start_trigger = None
            else:
                start_trigger = "resume"
            driver = self._driver_at(
                graph,
                restored.state,
                trace_id,
                Position.of(body),
                emitter,
                ckpt,
                start_trigger=start_trigger,
                resumed=not queued,
                parent=info.parent.trace_id if info.parent else None,
                input=body.input,
            )
            if self.invalidate_on_resume and not queued:
                await self._invalidate(driver, store, graph, trace_id, body, ckpt)
            return driver
        except BaseException:
            with anyio.CancelScope(shield=True):
                await store.release_lease(trace_id, ckpt.owner)
            raise

    def _need_store(self, what: str) -> CheckpointStore:
        if self.store is None:
            raise StoreRequired(
                f"{what}() needs a checkpoint store: GraphExecutor(store=gx.SQLiteStore(path))"
            )
        return self.store

    def _checkpointer(
        self, graph: Graph, trace_id: str, emitter: Emitter | None, parent: ParentRef | None
    ) -> Checkpointer:
        assert self.store is not None
        return Checkpointer(
            store=self.store,
            policy=self.policy,
            trace_id=trace_id,
            graph_name=graph.name,
            graph_hash=graph.hash,
            reducers=reducer_names(dict(graph.reducers)),
            barrier_nodes=graph.decision_paths,
            lease_ttl=self.lease_ttl,
            send_event=emitter.send if emitter is not None else None,
            parent=parent,
            events=emitter.log if emitter is not None else None,
        )

    def _driver_at(
        self,
        graph: Graph,
        state: dict[str, Any],
        trace_id: str,
        position: Position,
        emitter: Emitter,
        ckpt: Checkpointer,
        *,
        start_trigger: str | None,
        resumed: bool,
        parent: str | None,
        linked_context: str | None = None,
        input: Any = None,
    ) -> Driver:
        """A driver that continues from a checkpoint's position (resume_from and fork)."""
        assert self.store is not None
        return Driver(
            graph=graph,
            state=state if graph.state_type is None else dict(state),
            trace_id=trace_id,
            position=position,
            max_steps=self.max_steps,
            emitter=emitter,
            checkpointer=ckpt,
            store=self.store,
            poll_interval=self.decision_poll_interval,
            keep_log=self.execution_log,
            resilience=self._resilience,
            start_trigger=start_trigger,
            resumed=resumed,
            parent=parent,
            telemetry=self.telemetry,
            linked_context=linked_context,
            input=input,
        )

    @staticmethod
    async def _invalidate(
        driver: Driver,
        store: CheckpointStore,
        graph: Graph,
        trace_id: str,
        body: Any,
        ckpt: Checkpointer,
    ) -> None:
        """invalidate_on_resume: when completed executions' fingerprints changed, the resume
        starts over from the trace's first checkpoint, reusing every execution whose
        fingerprint and read values are unchanged (a re-run in place)."""
        from ._rerun.reuse import Reuse
        from ._rerun.source import load_source
        from .checkpoint._record import Invalidation

        source = await load_source(store, trace_id, graph, inputs=True)
        changed = [
            Invalidation(e.step, e.node, e.fingerprint, graph.nodes[e.node].fingerprint)
            for e in source.execs
            if e.node in graph.nodes and e.fingerprint != graph.nodes[e.node].fingerprint
        ]
        if not changed:
            return
        state: dict[str, Any] = msgspec.msgpack.decode(msgspec.msgpack.encode(source.initial))
        if graph.state_type is not None:
            state = graph.spec.restored(state)
        driver.state = state
        driver.pos = Position.of(
            source.first, decisions=dict(body.decisions), decision_cursor=body.decision_cursor
        )
        driver.start_trigger = "invalidated"
        driver.reuse = Reuse(source, None, None)
        driver.invalidated = changed
        ckpt.rewind = changed

    @staticmethod
    def _prime(ckpt: Checkpointer, restored: Restored) -> None:
        """Continue a trace's seq and compaction bookkeeping where its checkpoints stand."""
        rows = restored.rows
        ckpt.seq = rows[-1].seq
        ckpt.keeper.committed_seq = rows[-1].seq
        ckpt._base_bytes = len(rows[0].snapshot or b"")
        ckpt.base_graph_hash = restored.graph_hash
        ckpt.trace_context = restored.trace_context  # kept in later bases, telemetry or not
        ckpt._deltas_since_base = len(rows) - 1
        ckpt._delta_bytes_since_base = sum(len(r.body) for r in rows[1:])

    async def _new_driver(
        self,
        graph: Graph,
        state: Any,
        trace_id: str | None,
        decisions: Mapping[str, Decision] | None,
        emitter: Emitter | None,
    ) -> Driver:
        if not isinstance(graph, Graph):
            raise InvalidGraph(f"expected a built gx.Graph, got {type(graph).__name__}")
        trace_id = uuid.uuid4().hex if trace_id is None else check_trace_id(trace_id)
        if self.store is None:
            initial = graph.spec.initial(state, trace_id=trace_id)
            early = initial_decisions(graph, decisions, trace_id)
            return self._fresh_driver(
                graph, initial, trace_id, early, emitter, NullCheckpointer(), state
            )
        ckpt = self._checkpointer(graph, trace_id, emitter, None)
        info = await ckpt.keeper.acquire()
        try:
            if info is not None:
                return await self._next_turn(graph, state, trace_id, decisions, emitter, ckpt, info)
            initial = graph.spec.initial(state, trace_id=trace_id)
            early = initial_decisions(graph, decisions, trace_id)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.store.release_lease(trace_id, ckpt.owner)
            raise
        return self._fresh_driver(graph, initial, trace_id, early, emitter, ckpt, state)

    def _fresh_driver(
        self,
        graph: Graph,
        initial: dict[str, Any],
        trace_id: str,
        early: dict[str, Decision],
        emitter: Emitter | None,
        ckpt: Checkpointer | NullCheckpointer,
        state: Any,
    ) -> Driver:
        return Driver(
            graph=graph,
            state=initial,
            trace_id=trace_id,
            position=Position.start(graph.start, early),
            max_steps=self.max_steps,
            emitter=emitter,
            checkpointer=ckpt,
            store=self.store,
            poll_interval=self.decision_poll_interval,
            keep_log=self.execution_log,
            input=state,
            resilience=self._resilience,
            telemetry=self.telemetry,
        )

    async def _next_turn(
        self,
        graph: Graph,
        update: Any,
        trace_id: str,
        decisions: Mapping[str, Decision] | None,
        emitter: Emitter | None,
        ckpt: Checkpointer,
        info: RunInfo,
    ) -> Driver:
        """A conversation's next turn on a completed trace: the input goes through the
        reducers onto the last state, and the run starts again at the start node. Barrier
        occurrences keep counting; ``max_steps`` counts this turn's steps."""
        assert self.store is not None
        if info.status not in FINISHED_STATUSES:
            raise _not_finished(info)
        restored = await restore(self.store, trace_id, graph=graph, run=info)
        body = restored.body
        if body.status not in FINISHED_STATUSES:  # the runs row and the chain disagree
            raise _not_finished(info)
        self._check_graph(
            graph, restored.graph_hash, graph.start, None, trace_id, self.on_graph_change
        )
        turn = body.turn + 1
        state = dict(restored.state)
        writer = f"the input of turn {turn}"
        changes = changes_of(update, node=writer)
        if changes:
            try:
                changes = apply_changes(graph.spec, state, changes, node=None, writer=writer)
            except TornUpdate as torn:
                raise torn.error from torn.error.__cause__
        early: dict[str, Decision] = {}
        for key, decision in (decisions or {}).items():
            check_request(
                key,
                decision,
                every_occurrence=None,
                trace_id=trace_id,
                graph=graph,
                counts=body.barrier_counts,
                pending=None,
                decided=early,
            )
            early[key] = decision
        self._prime(ckpt, restored)
        ckpt.parent = restored.parent
        ckpt.created_at = info.created_at
        if changes:
            ckpt.note_step(body.step, "__input__", changes)
        position = Position(
            step=body.step,
            next_node=graph.start,
            barrier_counts=dict(body.barrier_counts),
            # A turn starts with the decisions given to it; decisions left over from earlier
            # turns (wildcards, early ones never used) do not carry over, nor does the inbox.
            decisions=early,
            decision_cursor=body.decision_cursor,
            turn=turn,
            turn_start=body.step,
        )
        return Driver(
            graph=graph,
            state=state,
            trace_id=trace_id,
            position=position,
            max_steps=self.max_steps,
            emitter=emitter,
            checkpointer=ckpt,
            store=self.store,
            poll_interval=self.decision_poll_interval,
            keep_log=self.execution_log,
            start_trigger="turn",
            input=update,
            resilience=self._resilience,
            telemetry=self.telemetry,
        )

    def _check_graph(
        self,
        graph: Graph,
        saved_hash: str,
        next_node: str | None,
        pending: PendingBarrier | None,
        trace_id: str,
        mode: str,
    ) -> None:
        if next_node is not None and next_node not in graph.nodes:
            raise GraphChanged(
                f"the run continues at node {next_node!r}, which graph {graph.name!r} no longer "
                "has",
                trace_id=trace_id,
                node=next_node,
            )
        if pending is not None:
            known = pending.node in graph.decision_nodes
            if "/" in pending.node:  # a barrier inside a child run
                try:
                    check_path_decision(graph, pending.barrier_id, wildcard=False, trace_id=None)
                    known = True
                except GraphError:
                    known = False
            if not known:
                raise GraphChanged(
                    f"the run waits at barrier {pending.barrier_id!r}, but {pending.node!r} is no "
                    f"longer a barrier of graph {graph.name!r}",
                    trace_id=trace_id,
                    node=pending.node,
                )
        if saved_hash != graph.hash:
            message = (
                f"graph {graph.name!r} changed structurally since run {trace_id!r} was "
                f"checkpointed (hash {saved_hash[:12]} -> {graph.hash[:12]})"
            )
            if mode == "fail":
                raise GraphChanged(message, trace_id=trace_id)
            warnings.warn(message, GraphChangedWarning, stacklevel=4)

    @asynccontextmanager
    async def _running(self, driver: Driver, recv: Any) -> AsyncIterator[Run]:
        run = Run(driver, recv)
        raised: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self._manager.drive, driver)
                try:
                    yield run
                except BaseException as exc:
                    raised = exc
                    raise
                finally:
                    driver.leave()
                    recv.close()
        except BaseExceptionGroup as group:
            # The consumer's own exception leaves the block as itself, not wrapped in the
            # ExceptionGroup of the task group that runs the driver.
            if raised is None or len(group.exceptions) != 1 or group.exceptions[0] is not raised:
                raise
        if raised is not None:
            raise raised


def _check_plan(plan: RerunPlan, fresh: RerunPlan) -> None:
    """PlanStale unless ``plan`` was made for the source and graph as they are now."""
    what = []
    if plan.trace_id != fresh.trace_id or plan.from_node != fresh.from_node:
        what.append(
            f"it plans trace {plan.trace_id!r} from {plan.from_node!r}, not "
            f"{fresh.trace_id!r} from {fresh.from_node!r}"
        )
    if plan.source_seq != fresh.source_seq:
        what.append(
            f"the source has checkpoints up to seq {fresh.source_seq} now (planned at "
            f"seq {plan.source_seq})"
        )
    if plan.graph_hash != fresh.graph_hash:
        what.append("the graph's structure changed")
    if plan.fingerprints != fresh.fingerprints:
        what.append("node fingerprints changed")
    if plan.update != fresh.update:
        what.append("the update differs")
    if what:
        raise PlanStale(
            f"the re-run plan of trace {fresh.trace_id!r} is stale: {'; '.join(what)}; "
            "call plan_rerun() again",
            trace_id=fresh.trace_id,
            node=fresh.from_node,
        )


async def _claim_new_trace(
    store: CheckpointStore,
    ckpt: Checkpointer,
    new_id: str,
    send: MemoryObjectSendStream[GraphEvent],
    recv: MemoryObjectReceiveStream[GraphEvent],
) -> None:
    """Take the lease of a trace a fork or re-run starts; refuse a trace id the store already
    has (the lease given back), closing the event stream on any failure."""
    try:
        taken = await ckpt.keeper.acquire()
        if taken is not None:
            with anyio.CancelScope(shield=True):
                await store.release_lease(new_id, ckpt.owner)
            raise _trace_taken(taken)
    except BaseException:
        send.close()
        recv.close()
        raise


def _trace_taken(info: RunInfo) -> RunExists:
    """A fork or re-run asked for a trace id the store already has."""
    return RunExists(
        f"trace id {info.trace_id!r} already has checkpoints (it is {info.status}): continue "
        "it with resume_from(), or start this run with another trace id",
        trace_id=info.trace_id,
        status=info.status,
    )


def _not_finished(info: RunInfo) -> RunExists:
    """A new run (or turn) on a trace that has not completed."""
    trace_id = info.trace_id
    if info.status == "waiting" and info.pending_barrier:
        instead = (
            f"decide barrier {info.pending_barrier!r} (handle, ex.decide or "
            "store.submit_decision) and resume it with resume_from()"
        )
    elif info.status == "queued":
        instead = (
            "a worker drives it once it claims it (gx.Worker, graphexec worker), or drive it "
            "here with resume_from()"
        )
    elif info.status == "failed" and info.next_node is None:
        instead = "fork it from an earlier checkpoint (ex.fork): it cannot be resumed"
    else:
        instead = "continue it with resume_from()"
    return RunExists(
        f"trace {trace_id!r} is {info.status}, not completed: a new turn starts only on a "
        f"completed trace; {instead}",
        trace_id=trace_id,
        status=info.status,
    )
