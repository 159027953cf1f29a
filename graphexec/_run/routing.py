"""Routing: which node runs next, as a pure function of the graph, the state and what the node
returned. It records nothing and changes nothing; the loop reports a taken fallback.
"""

from __future__ import annotations

from typing import Any

from .._directives import End, Fallback, Goto
from .._graph import Graph
from ..exceptions import MissingEdge, NodeExecutionFailed, Unrouted

__all__ = ("Directive", "route")

Directive = Goto | End | Fallback


def route(
    graph: Graph,
    state: dict[str, Any],
    node: str,
    directive: Directive | None,
    view: Any = None,
) -> str | None:
    """The go-to-next rule: a directive first; else conditions in order, then the normal edge,
    then the fallback. None ends the run; MissingEdge or Unrouted when nothing applies.

    ``view``: what the conditions receive (default: a fresh view of ``state``); a re-run's plan
    passes its own to learn which keys the conditions read."""
    routes = graph.routes(node)
    if directive is not None:
        if isinstance(directive, End):
            return None
        if isinstance(directive, Goto):
            if directive.target not in routes.targets:
                raise MissingEdge(
                    f"node {node!r} returned Goto({directive.target!r}) but declares no edge "
                    f"to it (edges: {', '.join(sorted(routes.targets)) or 'none'})",
                    target=directive.target,
                    node=node,
                )
            return directive.target
        fallback = routes.fallback
        if fallback is None:
            raise MissingEdge(
                f"node {node!r} returned Fallback({directive.reason!r}) but has no fallback "
                "edge; declare one with .fallback(node, target)",
                node=node,
            )
        return fallback.target
    if node in graph.ends:
        return None
    if routes.conditional:
        if view is None:
            view = graph.spec.view(state)
        for edge in routes.conditional:
            assert edge.when is not None
            try:
                taken = edge.when(view)
            except Exception as exc:
                raise NodeExecutionFailed(
                    f"condition of edge {edge.label} raised {exc!r}", node=node, cause=exc
                ) from exc
            if taken:
                return edge.target
    if routes.normal is not None:
        return routes.normal.target
    if routes.fallback is not None:
        return routes.fallback.target
    tried = [e.label for e in routes.conditional]
    raise Unrouted(
        f"no edge out of node {node!r} matched; conditions tried: "
        + ("; ".join(tried) if tried else "none (the node has no outgoing edges)"),
        conditions=tried,
        node=node,
    )
