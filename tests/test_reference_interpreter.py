"""Random graphs run by the executor end where a tiny reference interpreter says they end.

The reference follows DESIGN's rules literally: a node's update is applied key by key (the
"trail" key through ``append``, every other key overwritten); an ``End`` finishes the run; a
``Fallback`` follows the fallback edge; an end node finishes the run; otherwise the first
conditional edge whose predicate holds on the new state, in declaration order, else the normal
edge, else the fallback edge. More than ``max_steps`` node executions is ``StepsExceeded``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

import graphexec as gx

MAX_STEPS = 200
KEYS = 4
EXIT = "exit"


@dataclass(frozen=True)
class NodePlan:
    """What one node does: ``k{j} = (k{j} * a + b) % 97`` for each write, then maybe a
    directive (End or Fallback) when a value computed from its update says so."""

    name: str
    writes: tuple[tuple[int, int, int], ...]
    mode: str  # "async", "inline" or "thread"
    ends_early: bool
    falls_back: bool


@dataclass(frozen=True)
class EdgePlan:
    """One declared edge; ``when`` is ``(key, modulus, remainder)`` for a conditional one."""

    source: str
    target: str
    kind: str  # "normal", "when" or "fallback"
    when: tuple[int, int, int] | None = None


@dataclass
class GraphPlan:
    """A whole random graph: nodes in chain order, edges in declaration order."""

    nodes: list[NodePlan]
    edges: list[EdgePlan]
    ends: list[str]
    initial: dict[str, int] = field(default_factory=dict)


def compute(plan: NodePlan, state: Any) -> Any:
    """The node's result for ``state`` (shared by the executor and the reference)."""
    out: dict[str, Any] = {}
    for j, a, b in plan.writes:
        out[f"k{j}"] = (state.get(f"k{j}", 0) * a + b) % 97
    out["trail"] = plan.name
    signal = sum(v for k, v in out.items() if k != "trail")
    if plan.ends_early and signal % 17 == 0:
        return gx.End(update=out)
    if plan.falls_back and signal % 5 == 0:
        return gx.Fallback("multiple of five", update=out)
    return out


def make_fn(plan: NodePlan) -> Callable[[Any], Any]:
    """The node as the executor runs it: async, sync inline or sync in a worker thread."""
    if plan.mode == "async":

        async def node(state: Any) -> Any:
            return compute(plan, state)

        return node

    def sync_node(state: Any) -> Any:
        return compute(plan, state)

    return sync_node


def predicate(when: tuple[int, int, int]) -> Callable[[Any], bool]:
    """``state["k{key}"] % modulus == remainder`` (a missing key counts as 0; modulus 1: always)."""
    key, modulus, remainder = when

    def holds(state: Any) -> bool:
        return bool(state.get(f"k{key}", 0) % modulus == remainder)

    holds.__qualname__ = f"k{key}_mod_{modulus}_is_{remainder}"
    return holds


@st.composite
def graph_plans(draw: st.DrawFn) -> GraphPlan:
    """A chain of 3-8 nodes with random conditional and fallback edges and an optional exit."""
    n = draw(st.integers(3, 8))
    names = [f"n{i}" for i in range(n)]
    with_exit = draw(st.booleans())
    targets = names + ([EXIT] if with_exit else [])
    nodes = []
    for name in names:
        writes = draw(
            st.lists(
                st.tuples(st.integers(0, KEYS - 1), st.integers(1, 9), st.integers(0, 96)),
                min_size=1,
                max_size=3,
            )
        )
        nodes.append(
            NodePlan(
                name=name,
                writes=tuple(writes),
                mode=draw(st.sampled_from(["async", "async", "inline", "inline", "thread"])),
                ends_early=draw(st.sampled_from([True, False, False, False])),
                falls_back=False,  # set below, once we know whether it has a fallback edge
            )
        )
    if with_exit:
        nodes.append(NodePlan(EXIT, ((0, 1, 1),), "inline", False, False))

    edges = [EdgePlan(names[i], names[i + 1], "normal") for i in range(n - 1)]
    conditions = st.tuples(st.integers(0, KEYS - 1), st.integers(1, 5)).flatmap(
        lambda km: st.tuples(st.just(km[0]), st.just(km[1]), st.integers(0, km[1] - 1))
    )
    for _ in range(draw(st.integers(0, 2 * n))):
        source = draw(st.sampled_from(names[:-1]))
        target = draw(st.sampled_from(targets))
        edges.append(EdgePlan(source, target, "when", draw(conditions)))
    if with_exit and not any(e.target == EXIT for e in edges):
        edges.append(EdgePlan(draw(st.sampled_from(names[:-1])), EXIT, "when", draw(conditions)))
    fallback_sources = draw(st.lists(st.sampled_from(names), unique=True, max_size=3))
    for source in fallback_sources:
        edges.append(EdgePlan(source, draw(st.sampled_from(targets)), "fallback"))
    nodes = [
        NodePlan(p.name, p.writes, p.mode, p.ends_early, p.name in fallback_sources) for p in nodes
    ]
    edges = draw(st.permutations(edges))
    initial = {f"k{j}": v for j, v in enumerate(draw(st.lists(st.integers(0, 96), max_size=KEYS)))}
    return GraphPlan(nodes, edges, [names[-1], *([EXIT] if with_exit else [])], initial)


def build(plan: GraphPlan) -> gx.Graph:
    """The plan as a graphexec graph."""
    builder = gx.GraphBuilder("random")
    for node in plan.nodes:
        builder.node(node.name, make_fn(node), inline=node.mode == "inline")
    for e in plan.edges:
        if e.kind == "fallback":
            builder.fallback(e.source, e.target)
        elif e.when is not None:
            builder.edge(e.source, e.target, when=predicate(e.when))
        else:
            builder.edge(e.source, e.target)
    return builder.reducer("trail", gx.reducers.append).start("n0").end(*plan.ends).build()


@dataclass
class Outcome:
    """Where a run ended: its state and steps, or the node it could not run."""

    state: dict[str, Any]
    steps: int
    exceeded_at: str | None = None


def reference(plan: GraphPlan, max_steps: int) -> Outcome:
    """Run the plan by DESIGN's rules, the plain way."""
    nodes = {p.name: p for p in plan.nodes}
    state: dict[str, Any] = dict(plan.initial)
    current = "n0"
    steps = 0
    while True:
        if steps == max_steps:
            return Outcome(state, steps, exceeded_at=current)
        steps += 1
        result = compute(nodes[current], MappingProxyType(state))
        directive = result if isinstance(result, gx.End | gx.Fallback) else None
        update = result.update if directive is not None else result
        for key, value in update.items():
            if key == "trail":
                state["trail"] = [*state.get("trail", []), value]
            else:
                state[key] = value
        out = [e for e in plan.edges if e.source == current]
        fallback = next((e.target for e in out if e.kind == "fallback"), None)
        if isinstance(directive, gx.End):
            event("a node returned End")
            return Outcome(state, steps)
        if isinstance(directive, gx.Fallback):
            event("a node returned Fallback")
            assert fallback is not None
            current = fallback
            continue
        if current in plan.ends:
            return Outcome(state, steps)
        taken = next(
            (e.target for e in out if e.kind == "when" and predicate(e.when or (0, 1, 0))(state)),
            None,
        )
        normal = next((e.target for e in out if e.kind == "normal"), None)
        nxt = taken or normal or fallback
        assert nxt is not None, "generated graphs always route"
        current = nxt


@settings(max_examples=60, deadline=None)
@given(graph_plans())
async def test_executor_agrees_with_reference(plan: GraphPlan) -> None:
    """The executor reaches the reference's final state, steps and trail (or StepsExceeded)."""
    graph = build(plan)
    expected = reference(plan, MAX_STEPS)
    ex = gx.GraphExecutor(max_steps=MAX_STEPS)
    try:
        result = await ex.execute(graph, dict(plan.initial))
    except gx.StepsExceeded as exc:
        event("steps exceeded")
        assert expected.exceeded_at is not None, "the reference finished"
        assert (expected.exceeded_at, MAX_STEPS, MAX_STEPS) == (exc.node, exc.step, exc.max_steps)
        return
    assert expected.exceeded_at is None, "the reference ran out of steps"
    event(f"completed in {'<10' if result.steps < 10 else '>=10'} steps")
    assert expected.state == result.state
    assert expected.steps == result.steps
    assert expected.state["trail"] == [entry.node for entry in result.execution_log]
