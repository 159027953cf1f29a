"""Property: for random graphs, random targets and random changes (node code, inputs), a re-run
ends in the state a fresh run of the changed graph reaches, runs exactly the minimal set of
executions (the target, and those whose fingerprint or read values changed), and never runs an
execution its plan said it would reuse.

The graphs are forward chains with random reads, coarse outputs (so early cut-off happens) and
conditional edges that skip ahead on what earlier nodes wrote (so routing changes). A small
reference interpreter in this file computes the expected state and executions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import msgspec
from hypothesis import event, given, settings
from hypothesis import strategies as st

import graphexec as gx

INPUTS = ("x0", "x1", "x2")


class NodeDef(msgspec.Struct, frozen=True):
    reads: tuple[str, ...]
    mod: int
    const: int
    skip: tuple[int, str] | None
    """A conditional edge to node ``skip[0]`` taken when ``state[skip[1]]`` is even."""


class Scenario(msgspec.Struct, frozen=True):
    nodes: tuple[NodeDef, ...]
    changed: tuple[int, ...]
    """Per node: its const in the changed graph (another const: another fingerprint)."""
    init: dict[str, int]
    update: dict[str, int]
    target_pick: int


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(2, 7))
    nodes = []
    for i in range(n):
        avail = [*INPUTS, *(f"o{j}" for j in range(i))]
        reads = tuple(draw(st.lists(st.sampled_from(avail), unique=True, max_size=3)))
        skip = None
        if i + 2 < n and draw(st.booleans()):
            skip = (draw(st.integers(i + 2, n - 1)), draw(st.sampled_from([*avail, f"o{i}"])))
        nodes.append(
            NodeDef(reads, draw(st.sampled_from([2, 3, 1000])), draw(st.integers(0, 3)), skip)
        )
    changed = tuple(
        draw(st.integers(0, 3)) if draw(st.integers(0, 4)) == 0 else d.const for d in nodes
    )
    init = {k: draw(st.integers(0, 3)) for k in INPUTS}
    update = draw(st.dictionaries(st.sampled_from(INPUTS), st.integers(0, 3), max_size=2))
    return Scenario(tuple(nodes), changed, init, update, draw(st.integers(0, 1000)))


def _compute(d: NodeDef, const: int, state: dict[str, Any]) -> int:
    total: int = sum(state.get(k, 0) for k in d.reads)
    return (total * 7 + const) % d.mod


def _make_node(i: int, d: NodeDef, const: int) -> Callable[..., Any]:
    async def node(state: Any) -> dict[str, Any]:
        return {f"o{i}": _compute(d, const, state)}

    return node


def _make_cond(key: str) -> Callable[[Any], bool]:
    def cond(state: Any) -> bool:
        return bool(state.get(key, 0) % 2 == 0)

    return cond


def _build(sc: Scenario, consts: tuple[int, ...]) -> gx.Graph:
    b = gx.GraphBuilder("prop", fingerprint="auto")
    n = len(sc.nodes)
    for i, d in enumerate(sc.nodes):
        b.node(f"n{i}", _make_node(i, d, consts[i]))
    for i, d in enumerate(sc.nodes[:-1]):
        if d.skip is not None:
            b.edge(f"n{i}", f"n{d.skip[0]}", when=_make_cond(d.skip[1]))
        b.edge(f"n{i}", f"n{i + 1}")
    return b.start("n0").end(f"n{n - 1}").build()


Exec = tuple[str, int, tuple[tuple[str, bool, int], ...]]
"""(node, const, what it read: key, present, value)."""


def _reference(
    sc: Scenario, consts: tuple[int, ...], target: str | None, update: dict[str, int]
) -> tuple[dict[str, Any], list[Exec]]:
    state: dict[str, Any] = dict(sc.init)
    execs: list[Exec] = []
    i = 0
    pending = dict(update)
    while True:
        name, d = f"n{i}", sc.nodes[i]
        if name == target and pending:
            state.update(pending)
            pending = {}
        seen = tuple((k, k in state, state.get(k, 0)) for k in d.reads)
        execs.append((name, consts[i], seen))
        state[f"o{i}"] = _compute(d, consts[i], state)
        if i == len(sc.nodes) - 1:
            return state, execs
        if d.skip is not None and state.get(d.skip[1], 0) % 2 == 0:
            i = d.skip[0]
        else:
            i += 1


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_rerun_equals_a_fresh_run_and_runs_the_minimal_set(sc: Scenario) -> None:
    consts = tuple(d.const for d in sc.nodes)
    _, source_execs = _reference(sc, consts, None, {})
    target = source_execs[sc.target_pick % len(source_execs)][0]
    expected_state, changed_execs = _reference(sc, sc.changed, target, sc.update)
    before = {e[0]: e for e in source_execs}
    minimal = {
        name
        for name, const, seen in changed_execs
        if name == target or name not in before or before[name][1:] != (const, seen)
    }
    event(f"{len(minimal)} of {len(changed_execs)} executions run")

    async def main() -> tuple[gx.GraphResult, gx.RerunPlan]:
        ex = gx.GraphExecutor(store=gx.MemoryStore())
        await ex.execute(_build(sc, consts), dict(sc.init), trace_id="src")
        changed = _build(sc, sc.changed)
        plan = await ex.plan_rerun(changed, "src", target, update=sc.update)
        async with ex.rerun(changed, "src", target, update=sc.update, plan=plan) as run:
            async for _ in run:
                pass
        assert run.result is not None
        return run.result, plan

    result, plan = anyio.run(main)
    assert result.status == "completed", result.error
    assert expected_state == result.state
    ran = [entry.node for entry in result.execution_log]
    assert minimal == set(ran)
    assert len(ran) + result.reused == len(changed_execs)
    promised = {row.node for row in plan.rows if row.action == "reuse"}
    assert not promised & set(ran), plan.table()


class Branches(msgspec.Struct, frozen=True):
    nodes: tuple[tuple[NodeDef, ...], ...]
    """Per parallel node, its branches (``skip`` unused)."""
    changed: tuple[tuple[int, ...], ...]
    init: dict[str, int]
    update: dict[str, int]
    target_pick: int


class Called:
    """Which branches ran (a plain object: captured by closures, fingerprinted by type only)."""

    def __init__(self) -> None:
        self.names: set[str] = set()


@st.composite
def branch_scenarios(draw: st.DrawFn) -> Branches:
    nodes = []
    written: list[str] = []
    for i in range(draw(st.integers(1, 4))):
        avail = [*INPUTS, *written]
        branches = tuple(
            NodeDef(
                tuple(draw(st.lists(st.sampled_from(avail), unique=True, max_size=3))),
                draw(st.sampled_from([2, 1000])),
                draw(st.integers(0, 3)),
                None,
            )
            for _ in range(draw(st.integers(1, 3)))
        )
        nodes.append(branches)
        written.extend(f"p{i}_{j}" for j in range(len(branches)))
    changed = tuple(
        tuple(draw(st.integers(0, 3)) if draw(st.integers(0, 4)) == 0 else b.const for b in bs)
        for bs in nodes
    )
    init = {k: draw(st.integers(0, 3)) for k in INPUTS}
    update = draw(st.dictionaries(st.sampled_from(INPUTS), st.integers(0, 3), max_size=2))
    return Branches(tuple(nodes), changed, init, update, draw(st.integers(0, 100)))


def _make_branch(i: int, j: int, d: NodeDef, const: int, called: Called) -> Callable[..., Any]:
    async def branch(state: Any) -> dict[str, Any]:
        called.names.add(f"p{i}_{j}")
        return {f"p{i}_{j}": _compute(d, const, state)}

    return branch


def _build_parallel(sc: Branches, consts: tuple[tuple[int, ...], ...], called: Called) -> gx.Graph:
    b = gx.GraphBuilder("par", fingerprint="auto")
    for i, branches in enumerate(sc.nodes):
        fns = {f"b{j}": _make_branch(i, j, d, consts[i][j], called) for j, d in enumerate(branches)}
        b.parallel(f"n{i}", fns)
        if i:
            b.edge(f"n{i - 1}", f"n{i}")
    return b.start("n0").end(f"n{len(sc.nodes) - 1}").build()


@settings(max_examples=40, deadline=None)
@given(branch_scenarios())
def test_parallel_reruns_run_exactly_the_changed_branches(sc: Branches) -> None:
    consts = tuple(tuple(d.const for d in bs) for bs in sc.nodes)
    target = f"n{sc.target_pick % len(sc.nodes)}"
    # Reference: the state before each node in the source and in the re-run.
    state: dict[str, Any] = dict(sc.init)
    seen_before: dict[str, tuple[Any, ...]] = {}
    for i, bs in enumerate(sc.nodes):
        for j, d in enumerate(bs):
            seen_before[f"p{i}_{j}"] = tuple((k, k in state, state.get(k, 0)) for k in d.reads)
        for j, d in enumerate(bs):
            state[f"p{i}_{j}"] = _compute(d, consts[i][j], state)
    state = dict(sc.init)
    expected_ran: set[str] = set()
    for i, bs in enumerate(sc.nodes):
        if f"n{i}" == target:
            state.update(sc.update)
        for j, d in enumerate(bs):
            name = f"p{i}_{j}"
            seen = tuple((k, k in state, state.get(k, 0)) for k in d.reads)
            if f"n{i}" == target or sc.changed[i][j] != consts[i][j] or seen != seen_before[name]:
                expected_ran.add(name)
        for j, d in enumerate(bs):
            state[f"p{i}_{j}"] = _compute(d, sc.changed[i][j], state)

    async def main() -> tuple[gx.GraphResult, set[str]]:
        called = Called()
        ex = gx.GraphExecutor(store=gx.MemoryStore())
        await ex.execute(_build_parallel(sc, consts, called), dict(sc.init), trace_id="src")
        called.names.clear()
        changed = _build_parallel(sc, sc.changed, called)
        async with ex.rerun(changed, "src", target, update=sc.update) as run:
            async for _ in run:
                pass
        assert run.result is not None
        return run.result, called.names

    result, ran = anyio.run(main)
    assert result.status == "completed", result.error
    assert state == result.state
    assert expected_ran == ran
