"""The BENCHMARKS.md workloads Apache Burr supports (W1, W2, W3, W4, W7), the way its docs write them.

- A graph of `@action(reads=..., writes=...)` async functions built once with Burr's
  `GraphBuilder` (as LangGraph compiles once); each run is an `Application` built from it with
  `ApplicationBuilder().with_graph(...)` and driven with `await app.arun(halt_after=[last])`.
  Building the application is part of a run in Burr, so it is timed.
- Persistence: `AsyncSQLitePersister` (Burr's aiosqlite persister) on a fresh on-disk file,
  `initialize()` (the table) before timing, `.with_state_persister(...)`: Burr saves the whole
  state after every step (its only mode).
- W4: one `MapActions` node (Burr's parallelism) with 100 async branch actions, `is_async()`
  True so the branches run concurrently (Burr gathers them), and a reducing join.
- Not written: W5 (Burr's human input is an action halted before, without an approval
  primitive), W6 (not in the peers' list of the issue).

Every workload does ONE rep in a fresh subdirectory of `tmp` and returns its metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import pathlib
import time
from collections.abc import Callable
from typing import Any

from _common import (
    CHAIN,
    FANOUT,
    count,
    disk_bytes,
    entries,
    fresh_dir,
    import_figures,
    sqlite_blob_bytes,
)
from burr.core import ApplicationBuilder, State, action
from burr.core.graph import Graph, GraphBuilder
from burr.core.parallelism import MapActions
from burr.integrations.persisters.b_aiosqlite import AsyncSQLitePersister

_SERIALIZED_SQL = ["SELECT sum(length(state)) FROM burr_state"]


# ---------------------------------------------------------------- graph builders (untimed)


def _incr_node() -> Any:
    @action(reads=["n"], writes=["n"])
    async def node(state: State) -> State:
        return state.update(n=state["n"] + 1)

    return node


def _append_node(value: str) -> Any:
    @action(reads=["log"], writes=["log"])
    async def node(state: State) -> State:
        return state.append(log=value)

    return node


def _chain(n_nodes: int, make: Callable[[int], Any]) -> Graph:
    names = [f"n{i}" for i in range(n_nodes)]
    return (
        GraphBuilder()
        .with_actions(**{name: make(i) for i, name in enumerate(names)})
        .with_transitions(*itertools.pairwise(names))
        .build()
    )


def counter_chain() -> Graph:
    return _chain(CHAIN, lambda i: _incr_node())


def log_chain(n_nodes: int) -> Graph:
    ent = entries(n_nodes)
    return _chain(n_nodes, lambda i: _append_node(ent[i]))


def _branch(i: int, sleep: bool) -> Any:
    @action(reads=[], writes=["items"])
    async def node(state: State) -> State:
        if sleep:
            await asyncio.sleep(0.01)
        return state.update(items=[i])

    return node.action_function.with_name(f"b{i}")  # type: ignore[attr-defined]


class _FanOut(MapActions):
    def __init__(self, sleep: bool) -> None:
        super().__init__()
        self._branches = [_branch(i, sleep) for i in range(FANOUT)]

    def actions(self, state: State, context: Any, inputs: dict[str, Any]) -> Any:
        yield from self._branches

    async def reduce(self, state: State, states: Any) -> State:  # type: ignore[override]
        items: list[int] = []
        async for s in states:
            items.extend(s["items"])
        return state.update(items=items)

    def is_async(self) -> bool:
        return True

    @property
    def reads(self) -> list[str]:
        return ["items"]

    @property
    def writes(self) -> list[str]:
        return ["items"]


def fanout_graph(sleep: bool) -> Graph:
    @action(reads=["items"], writes=[])
    async def join(state: State) -> State:
        assert len(state["items"]) == FANOUT, len(state["items"])
        return state

    return (
        GraphBuilder()
        .with_actions(par=_FanOut(sleep), join=join)
        .with_transitions(("par", "join"))
        .build()
    )


def _app(graph: Graph, entry: str, **state: Any) -> ApplicationBuilder:
    return ApplicationBuilder().with_graph(graph).with_state(**state).with_entrypoint(entry)


async def _persister(db: pathlib.Path) -> AsyncSQLitePersister:
    persister = await AsyncSQLitePersister.from_values(db_path=str(db))
    await persister.initialize()  # the table, outside the timed region
    return persister


# ---------------------------------------------------------------- workloads


async def w1(tmp: pathlib.Path) -> dict[str, float]:
    graph = counter_chain()
    runs = count("W1")
    last = f"n{CHAIN - 1}"
    states = []
    t0 = time.perf_counter()
    for _ in range(runs):
        app = _app(graph, "n0", n=0).build()
        _, _, state = await app.arun(halt_after=[last])
        states.append(state)
    dt = time.perf_counter() - t0
    assert all(s["n"] == CHAIN for s in states), states[0]["n"]
    return {"us_per_step": dt / (runs * CHAIN) * 1e6}


async def w2(tmp: pathlib.Path) -> dict[str, float]:
    db = fresh_dir(tmp, "burr-w2") / "w2.db"
    runs = count("W2")
    graph = counter_chain()
    last = f"n{CHAIN - 1}"
    persister = await _persister(db)
    states = []
    try:
        t0 = time.perf_counter()
        for k in range(runs):
            app = await (
                _app(graph, "n0", n=0)
                .with_identifiers(app_id=f"w2-{k}")
                .with_state_persister(persister)
                .abuild()
            )
            _, _, state = await app.arun(halt_after=[last])
            states.append(state)
        dt = time.perf_counter() - t0
    finally:
        await persister.cleanup()
    assert all(s["n"] == CHAIN for s in states), states[0]["n"]
    return {
        "us_per_step": dt / (runs * CHAIN) * 1e6,
        "disk_bytes": disk_bytes(db),
        "serialized_bytes": sqlite_blob_bytes(db, _SERIALIZED_SQL),
    }


async def w3(tmp: pathlib.Path) -> dict[str, float]:
    db = fresh_dir(tmp, "burr-w3") / "w3.db"
    graph = log_chain(CHAIN)
    last = f"n{CHAIN - 1}"
    persister = await _persister(db)
    try:
        t0 = time.perf_counter()
        app = await (
            _app(graph, "n0", log=[])
            .with_identifiers(app_id="w3")
            .with_state_persister(persister)
            .abuild()
        )
        _, _, state = await app.arun(halt_after=[last])
        dt = time.perf_counter() - t0
    finally:
        await persister.cleanup()
    assert list(state["log"]) == list(entries(CHAIN)), len(state["log"])
    return {
        "us_per_step": dt / CHAIN * 1e6,
        "disk_bytes_per_step": disk_bytes(db) / CHAIN,
        "serialized_bytes_per_step": sqlite_blob_bytes(db, _SERIALIZED_SQL) / CHAIN,
    }


async def _w4(sleep: bool, runs: int) -> dict[str, float]:
    graph = fanout_graph(sleep)
    states = []
    t0 = time.perf_counter()
    for _ in range(runs):
        app = _app(graph, "par", items=[]).build()
        _, _, state = await app.arun(halt_after=["join"])
        states.append(state)
    dt = time.perf_counter() - t0
    assert all(sorted(s["items"]) == list(range(FANOUT)) for s in states)
    return {"ms_per_run": dt / runs * 1e3}


async def w4(tmp: pathlib.Path) -> dict[str, float]:
    return await _w4(False, count("W4"))


async def w4_sleep(tmp: pathlib.Path) -> dict[str, float]:
    return await _w4(True, count("W4-sleep"))


def w7(tmp: pathlib.Path) -> dict[str, float]:
    return import_figures("from burr.core import ApplicationBuilder")


WORKLOADS: dict[str, Callable[[pathlib.Path], Any]] = {
    "W1": w1,
    "W2": w2,
    "W3": w3,
    "W4": w4,
    "W4-sleep": w4_sleep,
    "W7": w7,
}
