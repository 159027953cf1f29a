"""One node execution: call the node (or fan it out), and collect what it returned as deltas.

This is the seam where a node's execution is wrapped: retry and timeout go around
:func:`execute_node`, which neither applies deltas nor routes (the loop does both once the
execution has succeeded). A re-run asks its reuse rule (``graphexec/_rerun/reuse.py``) before
calling it (``Driver._reused``: a reused execution is replayed, never retried or timed); what
it returns also records the keys the node read, and, for a re-run's map and parallel nodes,
``known``/``known_branches`` leave out the items and branches whose recorded output stands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, assert_never

from .._context import NodeContext, _Usage
from .._directives import End, Fallback, Goto
from .._graph import Graph, NodeSpec
from .._state import changes_of
from ..checkpoint._record import BranchRecord
from ..exceptions import GraphError, NodeExecutionFailed
from .fanout import run_map, run_parallel
from .invoke import invoke
from .recorder import Recorder
from .routing import Directive

__all__ = ("Outcome", "execute_node")


Outcome: TypeAlias = tuple[
    Directive | None,
    list[tuple[str, Any]],
    _Usage | None,
    "set[str] | frozenset[str] | None",
    "list[BranchRecord] | None",
]
"""What one execution produced: the routing directive, the changes, the tokens and side
effects the node reported through its context (if it had one), the state keys it read (None:
unknown, typed state), and for a parallel node what each branch read and wrote. A plain tuple:
built per step."""


async def execute_node(
    graph: Graph,
    state: dict[str, Any],
    spec: NodeSpec,
    step: int,
    span: str,
    rec: Recorder,
    known: Callable[[Any], tuple[bool, Any]] | None = None,
    known_branches: Callable[[str], Any] | None = None,
) -> Outcome:
    """Run node ``spec`` once against ``state`` (not changed here).

    ``known``/``known_branches``: in a re-run, the results the source recorded for a map node's
    items, or a parallel node's branches, that need not run again.

    A GraphError passes through; any other exception becomes NodeExecutionFailed naming the
    node. Barriers are not executed here: the loop resolves them with a decision.
    """
    name = spec.name
    try:
        kind = spec.kind
        if kind == "node":
            call = spec.call
            assert call is not None
            view = graph.spec.view(state)
            if call.takes_ctx:
                ctx = NodeContext(rec.trace_id, step, name, span, None, rec.emitter)
                result = await invoke(call, (view, ctx))
                usage: _Usage | None = ctx._usage
            else:
                result = await call.fn(view) if call.is_async else await invoke(call, (view,))
                usage = None
            read = view.keys_read if graph.state_type is None else None
            if result is None:
                return None, [], usage, read, None
            if isinstance(result, Goto | End | Fallback):
                return result, changes_of(result.update, node=name), usage, read, None
            return None, changes_of(result, node=name), usage, read, None
        if kind == "parallel":
            usage = _Usage()
            changes, branches, union = await run_parallel(
                rec,
                usage,
                graph.reducers,
                spec,
                step,
                span,
                lambda: graph.spec.view(state),
                known_branches,
            )
            return None, changes, usage, union, branches
        if kind == "map":
            usage = _Usage()
            assert spec.over is not None
            changes = await run_map(rec, usage, spec, step, span, state, known)
            return None, changes, usage, frozenset((spec.over,)), None
        if kind == "barrier":
            raise AssertionError(f"barrier {name!r} is resolved by the loop, not executed")
        assert_never(kind)
    except GraphError:
        raise
    except Exception as exc:
        raise NodeExecutionFailed(f"node {name!r} raised {exc!r}", node=name, cause=exc) from exc
