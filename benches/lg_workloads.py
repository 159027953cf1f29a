"""The BENCHMARKS.md workloads written for LangGraph, the way its docs write them.

- `StateGraph` over a `TypedDict` state; append keys use `Annotated[list, operator.add]`.
- Persistence: `AsyncSqliteSaver` (langgraph-checkpoint-sqlite) on a fresh on-disk file,
  `setup()` called before timing; a checkpoint every super-step, which is what LangGraph does
  by default with a checkpointer (default `durability="async"`: the checkpoint write of step k
  overlaps step k+1, and everything is flushed before `ainvoke` returns).
- W4 fans out with static edges (`fan -> b0..b99`, `[b0..b99] -> join`).
- W5 uses `interrupt()` in the approval node and `Command(resume=...)`.
- W6 stops with `interrupt_before=["n200"]`, reopens the file with a new saver (as a restarted
  process would), loads with `aget_state` and resumes with `ainvoke(None, config)`.

Every workload does ONE rep in a fresh subdirectory of `tmp` and returns its metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import operator
import pathlib
import time
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

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
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

RECURSION = 10_000

# Everything LangGraph serialized into the database (checkpoint + metadata blobs, pending writes).
_SERIALIZED_SQL = [
    "SELECT sum(length(checkpoint)) + sum(length(metadata)) FROM checkpoints",
    "SELECT sum(length(value)) FROM writes",
]


class CounterState(TypedDict):
    n: int


class LogState(TypedDict):
    log: Annotated[list, operator.add]


class ItemsState(TypedDict):
    items: Annotated[list, operator.add]


class ApprovalState(TypedDict, total=False):
    x: int
    approved: str
    done: bool


# ---------------------------------------------------------------- graph builders (untimed)


def _incr_node() -> Callable[[CounterState], Any]:
    async def node(state: CounterState) -> dict[str, int]:
        return {"n": state["n"] + 1}

    return node


def _append_node(value: str) -> Callable[[LogState], Any]:
    async def node(state: LogState) -> dict[str, list[str]]:
        return {"log": [value]}

    return node


def _chain_builder(n_nodes: int, make: Callable[[int], Any], state: type) -> StateGraph:
    b = StateGraph(state)
    names = [f"n{i}" for i in range(n_nodes)]
    for i, name in enumerate(names):
        b.add_node(name, make(i))
    b.add_edge(START, names[0])
    for a, c in itertools.pairwise(names):
        b.add_edge(a, c)
    b.add_edge(names[-1], END)
    return b


def counter_chain() -> StateGraph:
    return _chain_builder(CHAIN, lambda i: _incr_node(), CounterState)


def log_chain(n_nodes: int) -> StateGraph:
    ent = entries(n_nodes)
    return _chain_builder(n_nodes, lambda i: _append_node(ent[i]), LogState)


def fanout_graph(sleep: bool) -> Any:
    b = StateGraph(ItemsState)

    async def fan(state: ItemsState) -> dict[str, Any]:
        return {}

    def branch(i: int) -> Callable[[ItemsState], Any]:
        if sleep:

            async def node(state: ItemsState) -> dict[str, list[int]]:
                await asyncio.sleep(0.01)
                return {"items": [i]}

        else:

            async def node(state: ItemsState) -> dict[str, list[int]]:
                return {"items": [i]}

        return node

    async def join(state: ItemsState) -> dict[str, Any]:
        assert len(state["items"]) == FANOUT, len(state["items"])
        return {}

    names = [f"b{i}" for i in range(FANOUT)]
    b.add_node("fan", fan)
    for i, name in enumerate(names):
        b.add_node(name, branch(i))
        b.add_edge("fan", name)
    b.add_node("join", join)
    b.add_edge(names, "join")  # wait for every branch
    b.add_edge(START, "fan")
    b.add_edge("join", END)
    return b.compile()


def approval_builder() -> StateGraph:
    async def a(state: ApprovalState) -> dict[str, Any]:
        return {"x": 1}

    async def approval(state: ApprovalState) -> dict[str, Any]:
        decision = interrupt({"question": "approve?", "x": state["x"]})
        return {"approved": decision}

    async def c(state: ApprovalState) -> dict[str, Any]:
        return {"done": state["approved"] == "approve"}

    b = StateGraph(ApprovalState)
    b.add_node("a", a)
    b.add_node("approval", approval)
    b.add_node("c", c)
    b.add_edge(START, "a")
    b.add_edge("a", "approval")
    b.add_edge("approval", "c")
    b.add_edge("c", END)
    return b


def _cfg(thread: str | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {"recursion_limit": RECURSION}
    if thread is not None:
        cfg["configurable"] = {"thread_id": thread}
    return cfg


@contextlib.asynccontextmanager
async def _saver(path: pathlib.Path):
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        await saver.setup()  # create the file and schema outside the timed region
        yield saver


# ---------------------------------------------------------------- workloads


async def w1(tmp: pathlib.Path) -> dict[str, float]:
    graph = counter_chain().compile()
    runs = count("W1")
    cfg = _cfg()
    outs = []
    t0 = time.perf_counter()
    for _ in range(runs):
        outs.append(await graph.ainvoke({"n": 0}, cfg))
    dt = time.perf_counter() - t0
    assert all(o["n"] == CHAIN for o in outs), outs[:1]
    return {"us_per_step": dt / (runs * CHAIN) * 1e6}


async def w2(tmp: pathlib.Path) -> dict[str, float]:
    db = fresh_dir(tmp, "lg-w2") / "w2.db"
    runs = count("W2")
    builder = counter_chain()
    outs = []
    async with _saver(db) as saver:
        graph = builder.compile(checkpointer=saver)
        cfgs = [_cfg(f"w2-{k}") for k in range(runs)]
        t0 = time.perf_counter()
        for cfg in cfgs:
            outs.append(await graph.ainvoke({"n": 0}, cfg))
        dt = time.perf_counter() - t0
    assert all(o["n"] == CHAIN for o in outs), outs[:1]
    return {
        "us_per_step": dt / (runs * CHAIN) * 1e6,
        "disk_bytes": disk_bytes(db),
        "serialized_bytes": sqlite_blob_bytes(db, _SERIALIZED_SQL),
    }


async def w3(tmp: pathlib.Path) -> dict[str, float]:
    db = fresh_dir(tmp, "lg-w3") / "w3.db"
    builder = log_chain(CHAIN)
    async with _saver(db) as saver:
        graph = builder.compile(checkpointer=saver)
        cfg = _cfg("w3")
        t0 = time.perf_counter()
        out = await graph.ainvoke({"log": []}, cfg)
        dt = time.perf_counter() - t0
    assert out["log"] == list(entries(CHAIN)), len(out["log"])
    return {
        "us_per_step": dt / CHAIN * 1e6,
        "disk_bytes_per_step": disk_bytes(db) / CHAIN,
        "serialized_bytes_per_step": sqlite_blob_bytes(db, _SERIALIZED_SQL) / CHAIN,
    }


async def _w4(sleep: bool, runs: int) -> dict[str, float]:
    graph = fanout_graph(sleep)
    cfg = _cfg()
    outs = []
    t0 = time.perf_counter()
    for _ in range(runs):
        outs.append(await graph.ainvoke({"items": []}, cfg))
    dt = time.perf_counter() - t0
    assert all(sorted(o["items"]) == list(range(FANOUT)) for o in outs)
    return {"ms_per_run": dt / runs * 1e3}


async def w4(tmp: pathlib.Path) -> dict[str, float]:
    return await _w4(False, count("W4"))


async def w4_sleep(tmp: pathlib.Path) -> dict[str, float]:
    return await _w4(True, count("W4-sleep"))


async def w5(tmp: pathlib.Path) -> dict[str, float]:
    db = fresh_dir(tmp, "lg-w5") / "w5.db"
    cycles = count("W5")
    builder = approval_builder()
    waits, outs = [], []
    async with _saver(db) as saver:
        graph = builder.compile(checkpointer=saver)
        cfgs = [_cfg(f"w5-{k}") for k in range(cycles)]
        t0 = time.perf_counter()
        for cfg in cfgs:
            first = await graph.ainvoke({"x": 0}, cfg)  # runs `a`, stops in `approval`
            waits.append("__interrupt__" in first)
            outs.append(await graph.ainvoke(Command(resume="approve"), cfg))
        dt = time.perf_counter() - t0
    assert all(waits)
    assert all(o.get("done") is True for o in outs), outs[:1]
    return {"ms_per_cycle": dt / cycles * 1e3}


async def w6(tmp: pathlib.Path) -> dict[str, float]:
    db = fresh_dir(tmp, "lg-w6") / "w6.db"
    builder = log_chain(CHAIN + 1)  # n0 .. n200
    last = f"n{CHAIN}"
    cfg = _cfg("w6")
    # Untimed: run 200 steps, stopping before the last node, then close the saver.
    async with _saver(db) as saver:
        graph = builder.compile(checkpointer=saver, interrupt_before=[last])
        await graph.ainvoke({"log": []}, cfg)
    # Timed: a restarted process opens the file, loads the run, resumes the last step.
    async with contextlib.AsyncExitStack() as stack:
        t0 = time.perf_counter()
        saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(db)))
        t1 = time.perf_counter()
        graph = builder.compile(checkpointer=saver, interrupt_before=[last])  # untimed
        t2 = time.perf_counter()
        snap = await graph.aget_state(cfg)
        t3 = time.perf_counter()
        out = await graph.ainvoke(None, cfg)
        t4 = time.perf_counter()
    assert len(snap.values["log"]) == CHAIN and snap.next == (last,), snap.next
    assert out["log"] == list(entries(CHAIN + 1)), len(out["log"])
    open_ms, load_ms, step_ms = (t1 - t0) * 1e3, (t3 - t2) * 1e3, (t4 - t3) * 1e3
    return {
        "open_ms": open_ms,
        "load_ms": load_ms,
        "load_step_ms": load_ms + step_ms,
        "open_load_step_ms": open_ms + load_ms + step_ms,
    }


def w7(tmp: pathlib.Path) -> dict[str, float]:
    return import_figures("from langgraph.graph import StateGraph")


WORKLOADS: dict[str, Callable[[pathlib.Path], Any]] = {
    "W1": w1,
    "W2": w2,
    "W3": w3,
    "W4": w4,
    "W4-sleep": w4_sleep,
    "W5": w5,
    "W6": w6,
    "W7": w7,
}
