"""Child runs: a graph run inside a node of its parent (a subgraph node, each item of a map
over a graph, a parallel branch that is a graph).

A child run is a :class:`~graphexec._run.driver.Driver` over the child graph, with its own
state and :class:`Position`, driven inside the parent's step: its reducers, routing, retries,
fan-outs and barriers are the top-level ones, because they are the same loop. It writes no
checkpoint of its own: its :class:`ChildCheckpointer` asks the parent to save when one of its
barriers starts waiting or is resolved, and the parent's :class:`ChildHost` puts every
unfinished child's state and position (and the finished fan-out jobs' outputs) into the
parent's record, so one record covers parent and children. Its events go to the parent's
consumer through a :class:`PathEmitter`, which names each node, span and barrier by its path
(``"tools[2]/search"``, ``"tools[2]/approve#1"``); nested children compose their paths. A
child that fails raises ``NodeExecutionFailed`` whose ``node`` is the failing node's path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from .._barrier_ids import check_decision_value, is_resolved, parse_barrier_id, path_pattern
from .._checkpointer import NullCheckpointer
from .._decisions import Decision
from .._emit import Emitter
from .._events import (
    CheckpointSaved,
    ErrorInfo,
    GraphComplete,
    GraphEvent,
    GraphFailed,
    GraphStart,
)
from .._spec import Child
from ..checkpoint._record import ChildRun, KeptOutputs, PendingBarrier, StoredDecision
from ..exceptions import InvalidDecision, NodeExecutionFailed, StateError
from .decisions import check_path_decision, split_path
from .position import Position
from .recorder import Recorder

if TYPE_CHECKING:
    from .._graph import Graph

__all__ = (
    "ChildCheckpointer",
    "ChildHost",
    "PathEmitter",
    "item_value",
    "pending_barriers",
    "run_child",
    "state_in",
    "subgraph_changes",
)

_OWN = (GraphStart, GraphComplete, GraphFailed, CheckpointSaved)
"""A child's own lifecycle events: the parent's NodeStart/NodeEnd (or BranchCompleted) of the
node that runs it say the same, so they are not forwarded."""


class PathEmitter(Emitter):
    """Forwards a child run's events to the parent's emitter with the child's path put in
    front of every node name and span id, and the parent's step (the step of the node that
    runs the child: the stream's steps stay in order; the child's own step is in the span
    id). Closing it does not close the parent's stream."""

    __slots__ = ("_parent", "_path", "_step")

    def __init__(self, parent: Emitter, path: str, step: int) -> None:
        # No stream of its own: every method goes to the parent (the base class's slots stay
        # unset except the ones the base methods would read, which are overridden here).
        self._parent = parent
        self._path = path
        self._step = step
        self._thread = parent._thread  # ctx.emit's Delivery compares threads with it
        self.gone = False
        # The base class's other slots, unused here (every method goes to the parent, which
        # stamps and records what it forwards), set so nothing reading them fails.
        for slot in Emitter.__slots__:
            if not hasattr(self, slot):
                object.__setattr__(self, slot, deque() if slot == "_backlog" else None)

    def _rewrite(self, event: GraphEvent) -> GraphEvent | None:
        if isinstance(event, _OWN):
            return None
        changes: dict[str, Any] = {"step": self._step}
        node = getattr(event, "node", None)
        if isinstance(node, str):
            changes["node"] = f"{self._path}/{node}"
        span = getattr(event, "span_id", None)
        if isinstance(span, str):
            changes["span_id"] = f"{self._path}/{span}"
        barrier = getattr(event, "barrier_id", None)
        if isinstance(barrier, str):
            changes["barrier_id"] = f"{self._path}/{barrier}"
        nxt = getattr(event, "next_node", None)
        if isinstance(nxt, str):
            changes["next_node"] = f"{self._path}/{nxt}"
        return msgspec.structs.replace(event, **changes)

    async def send(self, event: GraphEvent, **how: Any) -> None:
        """``how``: passed on (whatever the parent's ``send`` takes, e.g. ``durable``)."""
        out = self._rewrite(event)
        if out is not None:
            await self._parent.send(out, **how)
        self.gone = self._parent.gone

    def send_soon(self, event: GraphEvent) -> None:
        out = self._rewrite(event)
        if out is not None:
            self._parent.send_soon(out)
        self.gone = self._parent.gone

    async def flush(self) -> None:
        await self._parent.flush()

    def close(self) -> None:
        """The parent's stream outlives its children."""


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        return value
    if isinstance(value, msgspec.Struct):
        return msgspec.structs.asdict(value)
    return None


def state_in(child: Child, source: Any, path: str, *, item: bool) -> dict[str, Any]:
    """The child's initial state from ``source``: the parent's state as its nodes see it
    (subgraph nodes and branches), or a map item (``item``).

    ``input``: None -> a copy of the source (an item must be a mapping); a sequence of key
    names -> those keys (absent ones are left out); ``{child_key: parent_key}``; a callable
    (source) -> a mapping."""
    spec = child.input
    what = "a map item" if item else "the parent's state"
    if callable(spec):
        made = spec(source)
        if not isinstance(made, Mapping):
            raise StateError(
                f"{path}: input= returned {type(made).__name__}, not a mapping of the child "
                "graph's initial state",
                node=path,
            )
        return dict(made)
    base = _as_mapping(source)
    if base is None:
        raise StateError(
            f"{path}: {what} is a {type(source).__name__}, not a mapping: give "
            "input=callable to make the child graph's initial state from it",
            node=path,
        )
    if spec is None:
        return dict(base)
    pairs = spec.items() if isinstance(spec, Mapping) else ((k, k) for k in spec)
    return {c: base[p] for c, p in pairs if p in base}


def _final_value(final: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in final:
        raise StateError(
            f"{path}: output= names key {key!r}, which the child graph's final state does not "
            f"have (it has: {', '.join(map(repr, sorted(final))) or 'nothing'})",
            key=key,
            node=path,
        )
    return final[key]


def subgraph_changes(child: Child, name: str, final: Mapping[str, Any], typed: Any) -> Any:
    """What a subgraph node (or a branch that is a graph) returns to its parent, from the
    child's final state: a mapping of updates (applied through the parent's reducers).

    ``output``: None -> ``{name: final state}``; a sequence of key names -> those keys;
    ``{parent_key: child_key}``; a callable (final state; typed: the Struct) -> updates."""
    spec = child.output
    if spec is None:
        return {name: dict(final)}
    if callable(spec):
        return spec(typed)
    if isinstance(spec, str):
        return {spec: _final_value(final, spec, name)}
    pairs = spec.items() if isinstance(spec, Mapping) else ((k, k) for k in spec)
    return {parent_key: _final_value(final, child_key, name) for parent_key, child_key in pairs}


def item_value(child: Child, path: str, final: Mapping[str, Any], typed: Any) -> Any:
    """What one item of a map over a graph appends to ``into``: None -> the final state;
    a key name -> that key's value; a callable (final state) -> its return value."""
    spec = child.output
    if spec is None:
        return dict(final)
    if callable(spec):
        return spec(typed)
    return _final_value(final, spec, path)


async def run_child(
    graph: Graph, child: Child, state: Any, path: str, rec: Recorder, step: int
) -> tuple[dict[str, Any], Any]:
    """Run ``graph`` as the child at ``path`` (from its start on ``state``, or where the
    parent's last checkpoint left it); its final state as a dict and as the child's nodes see
    it (the Struct of a typed graph). Raises NodeExecutionFailed naming the failing node by
    its path (``"tools[2]/search"``)."""
    host = rec.host
    assert isinstance(host, ChildHost), "a child runs inside a Driver's step"
    driver = host.spawn(graph, child, state, path, step)
    completed = False
    try:
        await driver.main()
        result = driver.result
        assert result is not None
        completed = result.status == "completed"
    finally:
        host.release(path, driver, completed)
    if not completed:
        error = result.error
        inner = error.node if error is not None and error.node is not None else None
        where = f"{path}/{inner}" if inner is not None else path
        cause: BaseException = error if error is not None else RuntimeError(result.status)
        # The cause is what the user's code raised (what retry filters test), when a node
        # raised it: the child's own NodeExecutionFailed only names where.
        while isinstance(cause, NodeExecutionFailed) and cause.cause is not None:
            cause = cause.cause
        raise NodeExecutionFailed(
            f"child graph {graph.name!r} failed in {where}: {error if error else cause}",
            node=where,
            cause=cause,
        ) from cause
    return driver.state, result.state


def pending_barriers(
    pending: PendingBarrier | None, children: Mapping[str, ChildRun], prefix: str = ""
) -> list[PendingBarrier]:
    """Every barrier a run waits at: its own, or each waiting child's (nested children
    too), with path ids (``"tools[2]/approve#1"``), by path."""
    if not children:
        if pending is None:
            return []
        return [
            PendingBarrier(
                barrier_id=f"{prefix}{pending.barrier_id}",
                node=f"{prefix}{pending.node}",
                prompt=pending.prompt,
                deadline=pending.deadline,
            )
        ]
    out: list[PendingBarrier] = []
    for path in sorted(children):
        c = children[path]
        out.extend(pending_barriers(c.pending_barrier, c.children, f"{prefix}{path}/"))
    return out


def snapshot(driver: Any) -> ChildRun:
    """A child driver's state and position, as its parent's checkpoint records it."""
    pos = driver.pos
    return ChildRun(
        state=driver.state,
        step=pos.step,
        next_node=pos.next_node,
        barrier_counts=dict(pos.barrier_counts),
        pending_barrier=pos.pending,
        decisions=dict(pos.decisions),
        children=driver.host.children(),
        compensable=list(pos.compensable),
    )


class ChildHost:
    """The children of one run (its Driver): the live child drivers by path, the decisions
    meant for them, the finished ones' outputs, and their part in the run's checkpoints.

    Before each save of its run it writes the children into the run's position
    (:meth:`prepare`): unfinished ones in ``children`` (their state and position), finished
    fan-out jobs in ``kept`` (the mechanism a failed fan-out uses), and the first waiting
    child's barrier as the run's ``pending`` (with its path id). A child that waits or is
    decided asks its parent to save (:meth:`child_saved`): one record covers parent and
    children, and a BarrierWaiting is only sent once it is committed.
    """

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.live: dict[str, Any] = {}
        """Child drivers running now, by path."""
        self.finished: dict[str, Any] = {}
        """Fan-out jobs (branch or item name) whose child finished, with their result."""
        self._lock = anyio.Lock()
        self._polling = False

    # -- children ------------------------------------------------------------------------

    def spawn(self, graph: Graph, child: Child, state: Any, path: str, step: int) -> Any:
        """A driver for the child at ``path``: resumed from the run's last checkpoint if it
        recorded one, else new on ``state``."""
        parent = self.driver
        pos = parent.pos
        saved = pos.children.pop(path, None)
        early = self._decisions_for(path)
        if saved is not None:
            position = Position(
                step=saved.step,
                next_node=saved.next_node,
                status="waiting" if saved.pending_barrier is not None else "running",
                barrier_counts=dict(saved.barrier_counts),
                pending=saved.pending_barrier,
                decisions={**saved.decisions, **early},
                compensable=list(saved.compensable),
                children=dict(saved.children),
            )
            initial = dict(saved.state)
        else:
            position = Position.start(graph.start, early)
            initial = graph.spec.initial(state, trace_id=parent.trace_id)
        emitter = parent.rec.emitter
        driver = type(parent)(
            graph=graph,
            state=initial,
            trace_id=parent.trace_id,
            position=position,
            max_steps=child.max_steps,
            emitter=PathEmitter(emitter, path, step) if emitter is not None else None,
            checkpointer=ChildCheckpointer(self, path),
            store=None,
            poll_interval=parent.poll_interval,
            keep_log=False,
            start_trigger=None,
            resumed=saved is not None,
            resilience=parent.res,
            # execute() without a store: a child barrier with no decision fails at once, as a
            # top-level one does, instead of waiting for a decision nothing can deliver.
            must_be_decided=parent.must_be_decided and parent.store is None,
        )
        self.live[path] = driver
        return driver

    def release(self, path: str, driver: Any, completed: bool) -> None:
        """The child at ``path`` stopped: a child that did not complete (cancelled: the run is
        stopping) keeps its place in the run's position, so the run's last save records it."""
        self.live.pop(path, None)
        if not completed and driver.result is not None and driver.result.status == "waiting":
            self.driver.pos.children[path] = snapshot(driver)

    async def saved_done(self, job: str, value: Any) -> None:
        """A fan-out job whose child finished returned ``value``; while other children still
        run or wait (and the run has a store), the run saves now ("child_finished"), so a
        crash before the whole node ends does not run this job again."""
        self.finished[job] = value
        parent = self.driver
        if parent.store is not None and self.live:
            async with self._lock:
                await parent._save("child_finished")

    def clear(self) -> None:
        """The run's step is over: its children are forgotten."""
        self.finished.clear()
        self.live.clear()
        self.driver.pos.children = {}

    def children(self) -> dict[str, ChildRun]:
        """The unfinished children as a checkpoint records them."""
        out = dict(self.driver.pos.children)
        for path, d in self.live.items():
            out[path] = snapshot(d)
        return out

    def prepare(self) -> None:
        """Write the children into the run's position before a save."""
        pos = self.driver.pos
        if not self.live and not self.finished and not pos.children:
            return
        pos.children = self.children()
        node = pos.next_node
        if self.finished and node is not None:
            step = pos.step + 1
            kept = pos.kept
            results = dict(kept.results) if kept is not None and kept.node == node else {}
            results.update(self.finished)
            attempts = kept.attempts if kept is not None and kept.node == node else {}
            pos.kept = KeptOutputs(node=node, step=step, results=results, attempts=attempts)
        waiting = sorted(
            (p, c.pending_barrier) for p, c in pos.children.items() if c.pending_barrier
        )
        if waiting:
            path, first = waiting[0]
            pos.pending = PendingBarrier(
                barrier_id=f"{path}/{first.barrier_id}",
                node=f"{path}/{first.node}",
                prompt=first.prompt,
                deadline=first.deadline,
            )
            pos.status = "waiting"
        elif pos.pending is not None and "/" in pos.pending.node:
            pos.pending = None
            pos.status = "running"

    async def child_saved(self, trigger: str) -> None:
        """A child started waiting at a barrier or resolved one: save the run (parent and
        children in one record). While a child waits and the run has a store, decisions from
        other processes are polled for (:meth:`_poll`)."""
        parent = self.driver
        # Every child waits (none runs): the run waits, and, as at a top-level barrier, its
        # checkpoint gives the lease up (the next write takes it back, checking that nobody
        # drove the run meanwhile).
        park = trigger == "barrier_waiting" and self.all_waiting()
        async with self._lock:
            found = await parent._save(
                trigger, decisions_after=parent.pos.decision_cursor, release=park
            )
        if found:
            await parent._merge_stored(found)

    async def flush(self) -> None:
        """Before a child sends BarrierWaiting (also a resumed child, which saves nothing
        first): the run's checkpoints are committed, and the store is polled from now on."""
        await self.driver.ckpt.flush()
        if not self._polling:
            self._polling = self.driver.start_polling(self._poll)

    async def _poll(self) -> None:
        """Look in the store for decisions while a child waits (the run itself is inside its
        step, so its own poll at a barrier does not run)."""
        parent = self.driver
        try:
            while True:
                await anyio.sleep(parent.poll_interval)
                if self.waiting():
                    await parent._pull_store_decisions()
                    if parent.leaves and self.live and self.all_waiting():
                        # A driver that leaves at barriers (a worker's) leaves once every
                        # child waits and the inbox had nothing for them.
                        parent.leave_waiting()
                        return
        finally:
            self._polling = False

    def waiting(self) -> bool:
        """Whether a live child, or a child of one (nested), waits at a barrier."""
        return any(d.pos.pending is not None or d.host.waiting() for d in self.live.values())

    def all_waiting(self) -> bool:
        """Whether every live child waits (itself, or all of its own live children)."""
        return all(
            d.pos.pending is not None or (d.host.live and d.host.all_waiting())
            for d in self.live.values()
        )

    # -- decisions -----------------------------------------------------------------------

    def _decisions_for(self, path: str) -> dict[str, Decision]:
        """Decisions the run holds for the child at ``path``: exact ones are handed over
        (removed here), wildcards over a path pattern stay (they serve every child)."""
        decisions = self.driver.pos.decisions
        out: dict[str, Decision] = {}
        prefix = f"{path}/"
        for key in [k for k in decisions if "/" in k]:
            head, rest = split_path(key)
            if "#" in key:
                if key.startswith(prefix):
                    out[key[len(prefix) :]] = decisions.pop(key)
            elif path_pattern(head).fullmatch(path):
                out[rest] = decisions[key]
        return out

    def offer(self, key: str, decision: Decision, *, wildcard: bool) -> None:
        """A decision for a barrier inside a child (``key`` has a path), checked, then given
        to the live child or kept for it (early). Raises InvalidDecision naming the problem."""
        parent = self.driver
        check_decision_value(decision, trace_id=parent.trace_id)
        check_path_decision(
            parent.graph, key, wildcard=wildcard, trace_id=parent.trace_id, decision=decision
        )
        head, rest = split_path(key)
        if wildcard:
            parent.pos.decisions[key] = decision
            pattern = path_pattern(head)
            for path, d in self.live.items():
                if pattern.fullmatch(path):
                    d.offer(rest, decision, wildcard=True)
            return
        live = self.live.get(head)
        if live is not None:
            live.offer(rest, decision, wildcard=False)
            return
        saved = parent.pos.children.get(head)
        if head in self.finished or (
            parent.pos.kept is not None and head in parent.pos.kept.results
        ):
            raise InvalidDecision(
                f"barrier {key!r} was already resolved (child {head!r} has finished)",
                trace_id=parent.trace_id,
                node=key,
            )
        if saved is not None and saved.pending_barrier is not None and "/" not in rest:
            node, occurrence = parse_barrier_id(rest)
            assert occurrence is not None
            if is_resolved(
                saved.barrier_counts, saved.pending_barrier.barrier_id, node, occurrence
            ):
                raise InvalidDecision(
                    f"barrier {key!r} was already resolved", trace_id=parent.trace_id, node=key
                )
        if key in parent.pos.decisions:
            raise InvalidDecision(
                f"barrier {key!r} already has a decision waiting to be used",
                trace_id=parent.trace_id,
                node=key,
            )
        parent.pos.decisions[key] = decision

    def offer_stored(self, key: str, decision: Decision, wildcard: bool) -> None:
        """A decision read from the store for a barrier inside a child (``merge_stored``'s
        route): given to the child or kept; raises what the run cannot use (the caller skips
        and reports it)."""
        self.offer(key, decision, wildcard=wildcard)


class ChildCheckpointer(NullCheckpointer):
    """A child run's checkpointer: it writes nothing itself; a barrier waiting or resolved in
    the child asks the parent to save (the parent's record covers its children)."""

    on_barrier = True

    def __init__(self, host: ChildHost, path: str) -> None:
        self.host = host
        self.path = path

    async def save(
        self,
        run: Position,
        state: dict[str, Any],
        trigger: str,
        *,
        error: str | None = None,
        failure: ErrorInfo | None = None,
        final: bool = False,
        release: bool = False,
        decisions_after: int | None = None,
        allow_base: bool = True,
        input: Any = None,
    ) -> list[StoredDecision] | None:
        if trigger in ("barrier_waiting", "barrier_resolved"):
            await self.host.child_saved(trigger)
        return None

    async def flush(self) -> None:
        await self.host.flush()
