"""The BENCHMARKS.md workloads pydantic-graph supports (W1, W4, W7), the way its docs write them.

- pydantic-graph's `GraphBuilder` of async steps (`g.step(fn, node_id=...)`) over a dataclass
  state mutated through `ctx.state`, edges with `g.edge_from(a).to(b)`, built once;
  `await graph.run(state=...)` per run.
- W4: the fan node broadcasts to 100 branch steps (`.to(b0, ..., b99)`), each returning its
  number; a `g.join(reduce_list_append)` collects them and a join step checks there are 100.
- W2 and W3 are not run: this pydantic-graph (2.x, the GraphBuilder API) has no persistence
  (its 0.x/1.x `BaseNode` graphs had JSON-file snapshots, never SQLite).

Every workload does ONE rep in a fresh subdirectory of `tmp` and returns its metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import pathlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from _common import CHAIN, FANOUT, count, import_figures
from pydantic_graph import Graph, GraphBuilder, StepContext, reduce_list_append

NO_PERSISTENCE = "no persistence (2.x)"


@dataclass
class Counter:
    n: int = 0


@dataclass
class Items:
    items: list[int] = field(default_factory=list)


# ---------------------------------------------------------------- graph builders (untimed)


def _incr_step() -> Callable[[StepContext[Counter, None, None]], Any]:
    async def step(ctx: StepContext[Counter, None, None]) -> None:
        ctx.state.n += 1

    return step


def counter_chain() -> Graph[Counter, None, None, None]:
    g: GraphBuilder[Counter, None, None, None] = GraphBuilder(state_type=Counter)
    steps = [g.step(_incr_step(), node_id=f"n{i}") for i in range(CHAIN)]
    g.add(g.edge_from(g.start_node).to(steps[0]))
    for a, b in itertools.pairwise(steps):
        g.add(g.edge_from(a).to(b))
    g.add(g.edge_from(steps[-1]).to(g.end_node))
    return g.build()


def _branch(i: int, sleep: bool) -> Callable[[StepContext[Items, None, None]], Any]:
    async def step(ctx: StepContext[Items, None, None]) -> int:
        if sleep:
            await asyncio.sleep(0.01)
        return i

    return step


def fanout_graph(sleep: bool) -> Graph[Items, None, None, list[int]]:
    g: GraphBuilder[Items, None, None, list[int]] = GraphBuilder(
        state_type=Items, output_type=list[int]
    )

    async def fan(ctx: StepContext[Items, None, None]) -> None:
        return None

    async def join(ctx: StepContext[Items, None, list[int]]) -> list[int]:
        ctx.state.items.extend(ctx.inputs)
        assert len(ctx.state.items) == FANOUT, len(ctx.state.items)
        return ctx.state.items

    fan_step = g.step(fan, node_id="fan")
    branches = [g.step(_branch(i, sleep), node_id=f"b{i}") for i in range(FANOUT)]
    collect = g.join(reduce_list_append, initial_factory=list, node_id="collect")
    join_step = g.step(join, node_id="join")
    g.add(g.edge_from(g.start_node).to(fan_step))
    g.add(g.edge_from(fan_step).to(*branches))
    g.add(g.edge_from(*branches).to(collect))
    g.add(g.edge_from(collect).to(join_step))
    g.add(g.edge_from(join_step).to(g.end_node))
    return g.build()


# ---------------------------------------------------------------- workloads


async def w1(tmp: pathlib.Path) -> dict[str, float]:
    graph = counter_chain()
    runs = count("W1")
    states = [Counter() for _ in range(runs)]
    t0 = time.perf_counter()
    for state in states:
        await graph.run(state=state)
    dt = time.perf_counter() - t0
    assert all(s.n == CHAIN for s in states), states[0]
    return {"us_per_step": dt / (runs * CHAIN) * 1e6}


async def _w4(sleep: bool, runs: int) -> dict[str, float]:
    graph = fanout_graph(sleep)
    states = [Items() for _ in range(runs)]
    t0 = time.perf_counter()
    for state in states:
        await graph.run(state=state)
    dt = time.perf_counter() - t0
    assert all(sorted(s.items) == list(range(FANOUT)) for s in states)
    return {"ms_per_run": dt / runs * 1e3}


async def w4(tmp: pathlib.Path) -> dict[str, float]:
    return await _w4(False, count("W4"))


async def w4_sleep(tmp: pathlib.Path) -> dict[str, float]:
    return await _w4(True, count("W4-sleep"))


def w7(tmp: pathlib.Path) -> dict[str, float]:
    return import_figures("from pydantic_graph import GraphBuilder")


WORKLOADS: dict[str, Callable[[pathlib.Path], Any] | str] = {
    "W1": w1,
    "W2": NO_PERSISTENCE,
    "W3": NO_PERSISTENCE,
    "W4": w4,
    "W4-sleep": w4_sleep,
    "W7": w7,
}
