"""Child runs: a graph run inside a node of its parent (a subgraph node, each item of a map
over a graph, a parallel branch that is a graph).

A child run is a :class:`~graphexec._run.driver.Driver` over the child graph, with its own
state and :class:`Position`, driven inside the parent's step: its reducers, routing, retries
and fan-outs are the top-level ones, because they are the same loop. It writes no checkpoint
of its own (the parent's step is the unit a checkpoint covers: a child that did not finish
runs again from its start on resume, like any node). Its events go to the parent's consumer
through a :class:`PathEmitter`, which names each node by its path (``"tools[2]/search"``);
nested children compose their paths. A child that fails raises ``NodeExecutionFailed`` whose
``node`` is the failing node's path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from .._emit import Emitter
from .._events import CheckpointSaved, GraphComplete, GraphEvent, GraphFailed, GraphStart
from .._spec import Child
from ..exceptions import NodeExecutionFailed, StateError
from .recorder import Recorder

if TYPE_CHECKING:
    from .._graph import Graph

__all__ = ("PathEmitter", "item_value", "run_child", "state_in", "subgraph_changes")

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
        self.gone = False

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
        nxt = getattr(event, "next_node", None)
        if isinstance(nxt, str):
            changes["next_node"] = f"{self._path}/{nxt}"
        return msgspec.structs.replace(event, **changes)

    async def send(self, event: GraphEvent) -> None:
        out = self._rewrite(event)
        if out is not None:
            await self._parent.send(out)
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
    """Run ``graph`` from its start on ``state`` as the child at ``path``; its final state as a
    dict and as the child's nodes see it (the Struct of a typed graph). Raises
    NodeExecutionFailed naming the failing node by its path (``"tools[2]/search"``)."""
    from .._checkpointer import NullCheckpointer
    from .driver import Driver
    from .position import Position

    initial = graph.spec.initial(state, trace_id=rec.trace_id)
    parent = rec.emitter
    emitter = PathEmitter(parent, path, step) if parent is not None else None
    driver = Driver(
        graph=graph,
        state=initial,
        trace_id=rec.trace_id,
        position=Position.start(graph.start),
        max_steps=child.max_steps,
        emitter=emitter,
        checkpointer=NullCheckpointer(),
        store=None,
        poll_interval=1.0,
        keep_log=False,
        start_trigger=None,
    )
    await driver.main()
    result = driver.result
    assert result is not None
    if result.status != "completed":
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
