"""One run: the single-task step loop (Driver), its handle, the Run a consumer iterates, and
GraphResult.

The driver owns the state dict and steps through the nodes in one task: run the node, apply its
deltas through the reducers, route, maybe checkpoint. Parallel nodes fan out in a task group
inside a step; everything else happens in this one task, so the state needs no locks.
"""

from __future__ import annotations

import math
import time
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._checkpointer import Checkpointer, RunSnapshot
from ._context import NodeContext, _Usage
from ._decisions import Approve, Decision, Edit, Reject, Skip, decision_name, default_decision
from ._directives import End, Fallback, Goto, StateDelta
from ._emit import Emitter
from ._events import (
    BarrierResolved,
    BarrierWaiting,
    ErrorInfo,
    GraphComplete,
    GraphEvent,
    GraphFailed,
    GraphStart,
    LogEntry,
    NodeEnd,
    NodeStart,
    ObservedError,
    StateChanged,
)
from ._graph import Graph, NodeSpec
from ._log import get_logger
from ._parallel import error_info, invoke, run_map, run_parallel
from ._state import changes_of
from .checkpoint._base import CheckpointStore, is_resolved, parse_barrier_id
from .checkpoint._record import PendingBarrier, StepRecord, StoredDecision, now
from .checkpoint._retry import decisions_after
from .exceptions import (
    Cancelled,
    GraphError,
    InvalidDecision,
    InvalidGraph,
    MissingEdge,
    NodeExecutionFailed,
    NodeNotFound,
    RunFinished,
    StateError,
    StepsExceeded,
    Unrouted,
)
from .typing import RunStatus

__all__ = ("Driver", "GraphResult", "Run", "RunHandle")

_DECISION_TYPES = (Approve, Reject, Edit, Skip)


class GraphResult(msgspec.Struct, frozen=True):
    """How a run ended.

    ``status`` is ``"completed"``, ``"failed"``, ``"cancelled"``, or ``"waiting"`` (the consumer
    left while a barrier waited). ``execution_log`` lists the steps run by this call (after a
    resume: the steps since the resume). ``error`` holds the exception of a failed or cancelled
    run.
    """

    trace_id: str
    state: Any
    status: RunStatus
    steps: int
    duration: float
    execution_log: list[LogEntry] = msgspec.field(default_factory=list)
    error: GraphError | None = None


class Driver:
    """Steps one run through its graph. Internal: users hold a Run and its RunHandle."""

    def __init__(
        self,
        *,
        graph: Graph,
        state: dict[str, Any],
        trace_id: str,
        next_node: str | None,
        max_steps: int,
        emitter: Emitter | None,
        checkpointer: Checkpointer | None,
        store: CheckpointStore | None,
        poll_interval: float,
        keep_log: bool,
        step: int = 0,
        counts: dict[str, int] | None = None,
        pending: PendingBarrier | None = None,
        decisions: dict[str, Decision] | None = None,
        decision_cursor: int = 0,
        start_trigger: str | None = "start",
        resumed: bool = False,
        parent: str | None = None,
        must_be_decided: bool = False,
    ) -> None:
        self.graph = graph
        self.state = state
        self.trace_id = trace_id
        self.next_node = next_node
        self.max_steps = max_steps
        self.emitter = emitter
        self.ckpt = checkpointer
        self.store = store
        self.poll_interval = poll_interval
        self.log_entries: list[LogEntry] | None = [] if keep_log else None
        self.step = step
        self.counts = counts if counts is not None else {}
        self.pending = pending
        self.decisions: dict[str, Decision] = decisions if decisions is not None else {}
        self.decision_cursor = decision_cursor
        self.start_trigger = start_trigger
        self.resumed = resumed
        self.parent = parent
        self.must_be_decided = must_be_decided
        self.status: RunStatus = "waiting" if pending is not None else "running"
        self.result: GraphResult | None = None
        self.log = get_logger(trace_id=trace_id, graph=graph.name)
        self._scope: anyio.CancelScope | None = None
        self._cancel_requested = False
        self._checkpoint_requested = False
        self._torn = False
        self._usage: _Usage | None = None
        self._t0 = 0.0
        wake_send, wake_recv = anyio.create_memory_object_stream[str](math.inf)
        self._wake_send: MemoryObjectSendStream[str] = wake_send
        self._wake_recv: MemoryObjectReceiveStream[str] = wake_recv

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once the run has ended (whatever the status)."""
        return self.result is not None

    async def main(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run to the end; never raises a GraphError (it becomes the result and an event)."""
        task_status.started()
        self._t0 = time.perf_counter()
        try:
            if self.ckpt is None:
                await self._guarded()
            else:
                async with anyio.create_task_group() as tg:
                    await self.ckpt.start(tg)
                    try:
                        await self._guarded()
                    finally:
                        with anyio.CancelScope(shield=True):
                            try:
                                await self.ckpt.close()
                            except GraphError as exc:
                                self.log.error("final checkpoint flush failed", error=str(exc))
                        tg.cancel_scope.cancel()
        finally:
            self._wake_send.close()
            self._wake_recv.close()
            if self.emitter is not None:
                with anyio.CancelScope(shield=True):
                    await self.emitter.flush()
                self.emitter.close()

    async def _guarded(self) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            if self._cancel_requested:  # cancel() came before the scope existed
                scope.cancel()
            try:
                await self._steps()
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    await self._stopped()
                raise
            except GraphError as exc:
                await self._failed(exc)
            except Exception as exc:
                await self._failed(
                    GraphError(f"internal error while running the graph: {exc!r}", node=None)
                )
                raise

    # -- requests from the handle ------------------------------------------------------------

    def request_cancel(self) -> None:
        """End the run with Cancelled after checkpointing (handle.cancel())."""
        if self.finished:
            return
        self._cancel_requested = True
        if self._scope is not None:
            self._scope.cancel()

    def leave(self) -> None:
        """The consumer left the stream early: stop, checkpointing first."""
        if self._scope is not None and not self.finished:
            self._scope.cancel()

    def request_checkpoint(self) -> None:
        """Checkpoint at the next step boundary (handle.checkpoint())."""
        self._checkpoint_requested = True

    def offer(self, key: str, decision: Decision, *, wildcard: bool) -> None:
        """Accept a decision from the handle, or refuse it at once with a clear error."""
        if self.finished:
            hint = (
                ""
                if self.status in ("completed", "failed")
                else "; it can be resumed with ex.resume_from(graph, trace_id), or sent a "
                "decision through store.submit_decision()"
            )
            raise RunFinished(
                f"run {self.trace_id!r} has stopped in this process ({self.status}): this handle "
                f"takes no more decisions{hint}",
                trace_id=self.trace_id,
            )
        check_decision_type(decision, trace_id=self.trace_id)
        if wildcard:
            node, occurrence = key, None
            if "#" in key:
                raise InvalidDecision(
                    f"decide_node() takes a node name, got {key!r}; use decide() for one "
                    "occurrence",
                    trace_id=self.trace_id,
                )
        else:
            node, occurrence = parse_barrier_id(key)
            if occurrence is None:
                raise InvalidDecision(
                    f"{key!r} is not a barrier id ('<node>#<occurrence>'); use decide_node() "
                    "to decide every occurrence of a node",
                    trace_id=self.trace_id,
                )
        check_barrier_node(self.graph, node, trace_id=self.trace_id)
        if occurrence is not None:
            pending = self.pending.barrier_id if self.pending else None
            if is_resolved(self.counts, pending, node, occurrence):
                raise InvalidDecision(
                    f"barrier {key!r} was already resolved; a decision is never carried over to "
                    "a later occurrence",
                    trace_id=self.trace_id,
                    node=node,
                )
            if key in self.decisions:
                raise InvalidDecision(
                    f"barrier {key!r} already has a decision waiting to be used",
                    trace_id=self.trace_id,
                    node=node,
                )
        if isinstance(decision, Edit):
            check_edit(self.graph, decision, node)
        self.decisions[key] = decision
        try:
            self._wake_send.send_nowait(key)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):  # pragma: no cover
            pass

    def add_usage(self, usage: _Usage) -> None:
        """Fold a branch context's reported usage into the current step's."""
        if self._usage is None:
            self._usage = _Usage()
        self._usage.tokens += usage.tokens
        self._usage.side_effects = self._usage.side_effects or usage.side_effects

    # -- the loop ----------------------------------------------------------------------------

    async def _steps(self) -> None:
        graph = self.graph
        emitter = self.emitter
        if emitter is not None:
            await emitter.send(
                GraphStart(
                    trace_id=self.trace_id,
                    step=self.step,
                    graph=graph.name,
                    graph_hash=graph.hash,
                    node=self.pending.node if self.pending else self.next_node,
                    resumed=self.resumed,
                    parent=self.parent,
                )
            )
        if self.ckpt is not None and self.start_trigger is not None:
            await self._save(self.start_trigger)
        if self.pending is not None:
            await self._reenter_barrier(self.pending)
        nodes = graph.nodes
        while self.next_node is not None:
            spec = nodes[self.next_node]
            if spec.kind == "barrier":
                await self._barrier(spec)
            else:
                await self._step(spec)
            if self.step & 15 == 0:
                await anyio.lowlevel.checkpoint()
        await self._completed()

    async def _step(self, spec: NodeSpec) -> None:
        step = self.step + 1
        name = spec.name
        if step > self.max_steps:
            raise StepsExceeded(
                f"the run reached max_steps={self.max_steps} before node {name!r}",
                max_steps=self.max_steps,
                node=name,
                step=self.step,
            )
        span = f"{name}@{step}"
        emitter = self.emitter
        trace_id = self.trace_id
        if emitter is not None:
            await emitter.send(
                NodeStart(trace_id=trace_id, step=step, node=name, span_id=span, kind=spec.kind)
            )
        self._usage = None
        t0 = time.perf_counter()
        try:
            if spec.kind == "node":
                call = spec.call
                assert call is not None
                view = self.graph.spec.view(self.state)
                if call.takes_ctx:
                    ctx = NodeContext(trace_id, step, name, span, None, emitter)
                    self._usage = ctx._usage
                    result = await invoke(call, (view, ctx))
                elif call.is_async:
                    result = await call.fn(view)
                else:
                    result = await invoke(call, (view,))
                if result is None:
                    directive = None
                    changes: list[tuple[str, Any]] = []
                elif isinstance(result, Goto | End | Fallback):
                    directive = result
                    changes = changes_of(result.update, node=name)
                else:
                    directive = None
                    changes = changes_of(result, node=name)
            elif spec.kind == "parallel":
                directive = None
                changes = await run_parallel(
                    self, spec, step, span, self.graph.spec.view(self.state)
                )
            else:
                directive = None
                changes = await run_map(self, spec, step, span, self.state)
        except GraphError as exc:
            await self._node_ended(name, step, span, t0, ok=False, next_node=None)
            _fill(exc, self.trace_id, name, step)
            raise
        except Exception as exc:
            await self._node_ended(name, step, span, t0, ok=False, next_node=None)
            raise NodeExecutionFailed(
                f"node {name!r} raised {exc!r}",
                node=name,
                cause=exc,
                trace_id=trace_id,
                step=step,
            ) from exc
        try:
            deltas = await self._apply(changes, name, step, span)
        except GraphError as exc:  # a delta that does not fit, a reducer that raised
            await self._node_ended(name, step, span, t0, ok=False, next_node=None)
            _fill(exc, self.trace_id, name, step)
            raise
        # The step is committed before routing: a routing failure leaves the state with the
        # node's deltas applied and no next node (see resume_from for what that means).
        self.step = step
        self.next_node = None
        nxt = await self._route(spec, directive, step, span)
        self.next_node = nxt
        t1 = await self._node_ended(name, step, span, t0, ok=True, next_node=nxt)
        ckpt = self.ckpt
        if ckpt is not None:
            usage = self._usage
            ckpt.note_step(
                StepRecord(step, name, deltas or []), t1 - t0, usage.tokens if usage else 0.0
            )
            if nxt is not None:
                trigger = self._trigger(spec.side_effects or bool(usage and usage.side_effects))
                if trigger is not None:
                    await self._save(trigger)

    def _trigger(self, side_effects: bool) -> str | None:
        ckpt = self.ckpt
        assert ckpt is not None
        policy = ckpt.policy
        if policy.every_step:
            return "step"
        if side_effects and policy.score.always_after_side_effects:
            return "side_effects"
        if ckpt.score_due:
            return "adaptive"
        if self._checkpoint_requested and policy.on_explicit:
            self._checkpoint_requested = False
            return "explicit"
        return None

    async def _node_ended(
        self, node: str, step: int, span: str, t0: float, *, ok: bool, next_node: str | None
    ) -> float:
        """Close a node execution: its execution-log line and its NodeEnd; returns the end time."""
        t1 = time.perf_counter()
        if self.log_entries is not None:
            self.log_entries.append(LogEntry(step, node, t0, t1, ok))
        if self.emitter is not None:
            await self.emitter.send(
                NodeEnd(
                    trace_id=self.trace_id,
                    step=step,
                    node=node,
                    span_id=span,
                    ok=ok,
                    duration=t1 - t0,
                    next_node=next_node,
                )
            )
        return t1

    async def _apply(
        self, changes: list[tuple[str, Any]], node: str, step: int, span: str
    ) -> list[StateDelta] | None:
        """Validate every delta, then apply them in order; the recorded deltas if checkpointing."""
        if not changes:
            return None
        spec = self.graph.spec
        changes = spec.check_all(changes, node)
        state = self.state
        applied = 0
        try:
            for k, v in changes:
                spec.apply(state, k, v, node=node)
                applied += 1
        except GraphError:
            # Some of this node's deltas are in the state and the rest are not: no checkpoint
            # may capture that (the last good one stands, and a resume re-runs the node).
            self._torn = applied > 0
            raise
        emitter = self.emitter
        if emitter is not None:
            for k, v in changes:
                await emitter.send(
                    StateChanged(
                        trace_id=self.trace_id, step=step, node=node, span_id=span, key=k, delta=v
                    )
                )
        if self.ckpt is None:
            return None
        return [StateDelta(k, v) for k, v in changes]

    async def _route(
        self, spec: NodeSpec, directive: Goto | End | Fallback | None, step: int, span: str
    ) -> str | None:
        """The go-to-next rule: conditions in order, then the normal edge, then the fallback."""
        name = spec.name
        routes = self.graph.routes(name)
        if directive is not None:
            if isinstance(directive, End):
                return None
            if isinstance(directive, Goto):
                if directive.target not in routes.targets:
                    raise MissingEdge(
                        f"node {name!r} returned Goto({directive.target!r}) but declares no edge "
                        f"to it (edges: {', '.join(sorted(routes.targets)) or 'none'})",
                        target=directive.target,
                        node=name,
                    )
                return directive.target
            fallback = routes.fallback
            if fallback is None:
                raise MissingEdge(
                    f"node {name!r} returned Fallback({directive.reason!r}) but has no fallback "
                    "edge; declare one with .fallback(node, target)",
                    node=name,
                )
            self.log.warning(
                "fallback", node=name, step=step, span_id=span, reason=directive.reason
            )
            if self.emitter is not None:
                await self.emitter.send(
                    ObservedError(
                        trace_id=self.trace_id,
                        step=step,
                        node=name,
                        span_id=span,
                        error=ErrorInfo(type="Fallback", message=directive.reason, node=name),
                    )
                )
            return fallback.target
        if name in self.graph.ends:
            return None
        if routes.conditional:
            view = self.graph.spec.view(self.state)
            for edge in routes.conditional:
                assert edge.when is not None
                try:
                    taken = edge.when(view)
                except Exception as exc:
                    raise NodeExecutionFailed(
                        f"condition of edge {edge.label} raised {exc!r}", node=name, cause=exc
                    ) from exc
                if taken:
                    return edge.target
        if routes.normal is not None:
            return routes.normal.target
        if routes.fallback is not None:
            return routes.fallback.target
        tried = [e.label for e in routes.conditional]
        raise Unrouted(
            f"no edge out of node {name!r} matched; conditions tried: "
            + ("; ".join(tried) if tried else "none (the node has no outgoing edges)"),
            conditions=tried,
            node=name,
        )

    # -- barriers ----------------------------------------------------------------------------

    async def _barrier(self, spec: NodeSpec) -> None:
        name = spec.name
        step = self.step + 1
        if step > self.max_steps:
            raise StepsExceeded(
                f"the run reached max_steps={self.max_steps} before barrier {name!r}",
                max_steps=self.max_steps,
                node=name,
                step=self.step,
            )
        span = f"{name}@{step}"
        if self.emitter is not None:
            await self.emitter.send(
                NodeStart(
                    trace_id=self.trace_id, step=step, node=name, span_id=span, kind="barrier"
                )
            )
        t0 = time.perf_counter()
        # The occurrence is counted only once it is decided or pending (no await in between):
        # until then a decision for it, from the handle or the store, is early, not "resolved".
        occurrence = self.counts.get(name, 0) + 1
        barrier_id = f"{name}#{occurrence}"
        self.step = step
        # Decisions sent through the store are read with the waiting checkpoint (one round
        # trip), in _wait_and_resolve; here only those already in the process count.
        decision = self._take_decision(barrier_id, name)
        if decision is not None:
            self.counts[name] = occurrence
            await self._resolve(spec, step, span, barrier_id, decision, "human", t0)
            return
        try:
            prompt = (
                await invoke(spec.prompt, (self.graph.spec.view(self.state),))
                if (spec.prompt)
                else None
            )
        except Exception as exc:
            raise NodeExecutionFailed(
                f"prompt of barrier {name!r} raised {exc!r}", node=name, cause=exc
            ) from exc
        deadline = now() + spec.timeout if spec.timeout is not None else None
        self.counts[name] = occurrence
        self.pending = PendingBarrier(
            barrier_id=barrier_id, node=name, prompt=prompt, deadline=deadline
        )
        await self._wait_and_resolve(spec, step, span, t0)

    async def _reenter_barrier(self, pending: PendingBarrier) -> None:
        """A resumed run that was waiting waits again, with the same barrier id."""
        spec = self.graph.nodes[pending.node]
        step = self.step
        span = f"{spec.name}@{step}"
        if self.emitter is not None:
            await self.emitter.send(
                NodeStart(
                    trace_id=self.trace_id, step=step, node=spec.name, span_id=span, kind="barrier"
                )
            )
        await self._pull_store_decisions()
        await self._wait_and_resolve(spec, step, span, time.perf_counter(), resumed=True)

    async def _wait_and_resolve(
        self, spec: NodeSpec, step: int, span: str, t0: float, *, resumed: bool = False
    ) -> None:
        pending = self.pending
        assert pending is not None
        decision = self._take_decision(pending.barrier_id, spec.name)
        by = "human"
        if decision is None and not resumed:
            self.status = "waiting"
            self.next_node = spec.name
            found = None
            if self.ckpt is not None and self.ckpt.policy.on_barrier:
                found = await self._save("barrier_waiting", decisions_after=self.decision_cursor)
            if found is None:
                await self._pull_store_decisions()
            else:
                self._merge_stored(found)
            decision = self._take_decision(pending.barrier_id, spec.name)
        if decision is None:
            self.status = "waiting"
            self.next_node = spec.name
            if self.ckpt is not None:
                await self.ckpt.flush()  # BarrierWaiting only once the wait is committed
            self.log.info(
                "barrier waiting", node=spec.name, step=step, barrier_id=pending.barrier_id
            )
            if self.emitter is not None:
                await self.emitter.send(
                    BarrierWaiting(
                        trace_id=self.trace_id,
                        step=step,
                        barrier_id=pending.barrier_id,
                        node=spec.name,
                        prompt=pending.prompt,
                        deadline=pending.deadline,
                    )
                )
            decision, by = await self._wait(spec, pending)
        await self._resolve(spec, step, span, pending.barrier_id, decision, by, t0)

    async def _wait(self, spec: NodeSpec, pending: PendingBarrier) -> tuple[Decision, str]:
        if self.must_be_decided and self.store is None and pending.deadline is None:
            raise InvalidGraph(
                f"execute() reached barrier {pending.barrier_id!r} with no decision for it and "
                "nothing that could deliver one; pass decisions={...} for it (or for "
                f"{spec.name!r}: every occurrence), or use execute_stream() and decide through "
                "run.handle",
                node=spec.name,
            )
        try:
            while True:
                decision = self._take_decision(pending.barrier_id, spec.name)
                if decision is not None:
                    return decision, "human"
                wait = math.inf
                if pending.deadline is not None:
                    wait = pending.deadline - now()
                    if wait <= 0:
                        return default_decision(spec.default), "timeout"
                if self.store is not None:
                    wait = min(wait, self.poll_interval)
                with anyio.move_on_after(wait) as waited:
                    await self._wake_recv.receive()
                if waited.cancelled_caught:
                    # Woken by the poll timer, not by the handle (whose decisions are already
                    # in the registry): look in the store for decisions from other processes.
                    await self._pull_store_decisions()
        except anyio.get_cancelled_exc_class():
            if self._cancel_requested and self.emitter is not None:
                with anyio.CancelScope(shield=True):
                    await self.emitter.send(
                        BarrierResolved(
                            trace_id=self.trace_id,
                            step=self.step,
                            barrier_id=pending.barrier_id,
                            node=spec.name,
                            decision="reject",
                            reason="cancelled",
                            by="cancel",
                        )
                    )
            raise

    def _take_decision(self, barrier_id: str, node: str) -> Decision | None:
        # An exact decision is used once; a wildcard (keyed by node name) serves every occurrence.
        decision = self.decisions.pop(barrier_id, None)
        if decision is None:
            decision = self.decisions.get(node)
        return decision

    async def _pull_store_decisions(self) -> None:
        """Read decisions submitted through the store since the last look."""
        if self.store is None or self.ckpt is None:
            return
        self._merge_stored(await decisions_after(self.store, self.trace_id, self.decision_cursor))

    def _merge_stored(self, items: list[StoredDecision]) -> None:
        """Keep decisions that came through the store; ignore ones the run can never use."""
        for item in items:
            self.decision_cursor = max(self.decision_cursor, item.id)
            node, occurrence = parse_barrier_id(item.barrier_id)
            spec = self.graph.nodes.get(node)
            pending = self.pending.barrier_id if self.pending else None
            if (
                spec is None
                or spec.kind != "barrier"
                or (occurrence is not None and is_resolved(self.counts, pending, node, occurrence))
            ):
                self.log.warning(
                    "ignored a stored decision", barrier_id=item.barrier_id, decision_id=item.id
                )
                continue
            if occurrence is not None and item.barrier_id in self.decisions:
                continue  # the first decision for an occurrence wins
            self.decisions[item.barrier_id] = item.decision

    async def _resolve(
        self,
        spec: NodeSpec,
        step: int,
        span: str,
        barrier_id: str,
        decision: Decision,
        by: str,
        t0: float,
    ) -> None:
        name = spec.name
        changes: list[tuple[str, Any]] = []
        if isinstance(decision, Edit):
            changes.extend(decision.update.items())
        verdict = decision_name(decision)
        reason = decision.reason if isinstance(decision, Reject) else None
        assert spec.record is not None
        changes.append((spec.record, {"decision": verdict, "reason": reason, "by": by}))
        self.pending = None
        self.status = "running"
        deltas = await self._apply(changes, name, step, span)
        self.log.info("barrier resolved", node=name, step=step, barrier_id=barrier_id, by=by)
        if self.emitter is not None:
            await self.emitter.send(
                BarrierResolved(
                    trace_id=self.trace_id,
                    step=step,
                    barrier_id=barrier_id,
                    node=name,
                    decision=verdict,  # type: ignore[arg-type]
                    reason=reason,
                    by=by,  # type: ignore[arg-type]
                    edited=isinstance(decision, Edit),
                )
            )
        self.next_node = None
        nxt = await self._route(spec, None, step, span)
        self.next_node = nxt
        await self._node_ended(name, step, span, t0, ok=True, next_node=nxt)
        if self.ckpt is not None:
            self.ckpt.note_step(StepRecord(step, name, deltas or []), 0.0, 0.0)
            if nxt is not None and self.ckpt.policy.on_barrier:
                await self._save("barrier_resolved")

    # -- endings -----------------------------------------------------------------------------

    def _snapshot(self, error: str | None = None) -> RunSnapshot:
        return RunSnapshot(
            step=self.step,
            next_node=self.next_node,
            status=self.status,
            barrier_counts=self.counts,
            pending=self.pending,
            decisions=self.decisions,
            decision_cursor=self.decision_cursor,
            error=error,
        )

    async def _save(
        self,
        trigger: str,
        error: str | None = None,
        *,
        final: bool = False,
        decisions_after: int | None = None,
    ) -> list[StoredDecision] | None:
        assert self.ckpt is not None
        return await self.ckpt.save(
            self._snapshot(error),
            self.state,
            trigger,
            final=final,
            decisions_after=decisions_after,
        )

    def _finish(self, status: RunStatus, error: GraphError | None) -> GraphResult:
        self.status = status
        self.result = GraphResult(
            trace_id=self.trace_id,
            state=self.graph.spec.public(self.state),
            status=status,
            steps=self.step,
            duration=time.perf_counter() - self._t0,
            execution_log=self.log_entries if self.log_entries is not None else [],
            error=error,
        )
        return self.result

    async def _completed(self) -> None:
        self.status = "completed"
        if self.ckpt is not None and self.ckpt.policy.on_completion:
            await self._save("completion", final=True)
        if self.ckpt is not None:
            await self.ckpt.flush()
        result = self._finish("completed", None)
        if self.emitter is not None:
            await self.emitter.send(
                GraphComplete(
                    trace_id=self.trace_id,
                    step=self.step,
                    state=self.state,
                    steps=result.steps,
                    duration=result.duration,
                )
            )

    async def _failed(self, exc: GraphError) -> None:
        _fill(exc, self.trace_id, exc.node, exc.step if exc.step is not None else self.step)
        self.status = "failed"
        self.log.error(
            "run failed",
            node=exc.node,
            step=exc.step,
            error=str(exc),
            error_type=type(exc).__name__,
        )
        if self._torn:
            self.log.warning("no failure checkpoint: the failing node's updates were half applied")
        elif self.ckpt is not None and self.ckpt.policy.on_completion:
            try:
                await self._save("failure", error=f"{type(exc).__name__}: {exc}", final=True)
                await self.ckpt.flush()
            except GraphError as ckpt_exc:
                self.log.error("failure checkpoint not written", error=str(ckpt_exc))
        self._finish("failed", exc)
        if self.emitter is not None:
            await self.emitter.send(
                GraphFailed(
                    trace_id=self.trace_id,
                    step=self.step,
                    error=error_info(exc, exc.node),
                    state=self.state,
                )
            )

    async def _stopped(self) -> None:
        """Cancelled (handle.cancel(), the consumer leaving, or an outer cancel scope)."""
        waiting = self.pending is not None and not self._cancel_requested
        status: RunStatus = "waiting" if waiting else "cancelled"
        self.status = status
        error = (
            None
            if waiting
            else Cancelled(
                f"run {self.trace_id!r} was cancelled", trace_id=self.trace_id, step=self.step
            )
        )
        if self.ckpt is not None:
            try:
                await self._save("cancel" if not waiting else "left", final=True)
                await self.ckpt.flush()
            except GraphError as exc:
                self.log.error("cancel checkpoint not written", error=str(exc))
        self._finish(status, error)
        if error is not None and self.emitter is not None and self._cancel_requested:
            await self.emitter.send(
                GraphFailed(
                    trace_id=self.trace_id,
                    step=self.step,
                    error=error_info(error, None),
                    state=self.state,
                    status="cancelled",
                )
            )


def check_decision_type(decision: object, *, trace_id: str | None) -> None:
    """Raise unless ``decision`` is one of the decision types."""
    if not isinstance(decision, _DECISION_TYPES):
        raise InvalidDecision(
            f"{decision!r} is not a decision: use gx.Approve(), gx.Reject(reason), "
            "gx.Edit(update) or gx.Skip()",
            trace_id=trace_id,
        )


def check_barrier_node(graph: Graph, node: str, *, trace_id: str | None) -> None:
    """Raise unless ``node`` is a barrier of ``graph``."""
    spec = graph.nodes.get(node)
    if spec is None:
        raise NodeNotFound(
            f"graph {graph.name!r} has no node {node!r}", trace_id=trace_id, node=node
        )
    if spec.kind != "barrier":
        raise InvalidDecision(
            f"node {node!r} is a {spec.kind} node, not a barrier: it takes no decisions",
            trace_id=trace_id,
            node=node,
        )


def check_edit(graph: Graph, decision: Edit, node: str) -> None:
    """Validate an Edit's update against the graph's state (StateError names the key)."""
    for key, value in decision.update.items():
        if not isinstance(key, str):
            raise StateError(f"Edit update keys must be str, got {key!r}", node=node)
        graph.spec.check(key, value, node=node)


def _fill(exc: GraphError, trace_id: str, node: str | None, step: int | None) -> None:
    if exc.trace_id is None:
        exc.trace_id = trace_id
    if exc.node is None:
        exc.node = node
    if exc.step is None:
        exc.step = step


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
        pending = self._driver.pending
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
