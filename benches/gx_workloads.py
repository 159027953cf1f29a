"""The BENCHMARKS.md workloads written for graphexec, through its public API (DESIGN.md).

- Chains are `GraphBuilder` chains of distinct `async def` nodes; append keys use
  `.reducer(key, gx.reducers.append)`.
- Persistence: `gx.SQLiteStore` on a fresh on-disk file, opened (file + schema created) before
  timing, with `gx.CheckpointPolicy(every_step=True)` (durability "sync" unless the workload
  says "async").
- W4 is one `.parallel()` node with 100 branches between a fan node and a join node.
- W5 and W6 use a `.barrier()` and approve it from the event stream.

Every workload does ONE rep in a fresh subdirectory of `tmp` and returns its metrics.
"""

from __future__ import annotations

import gc
import itertools
import os
import pathlib
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import anyio
from _common import (
    CHAIN,
    FANOUT,
    count,
    disk_bytes,
    entries,
    fresh_dir,
    import_figures,
)

import graphexec as gx

MAX_STEPS = 100_000


# ---------------------------------------------------------------- graph builders (untimed)


def _incr_node() -> Callable[[dict[str, Any]], Any]:
    async def node(state: dict[str, Any]) -> dict[str, int]:
        return {"n": state["n"] + 1}

    return node


def _append_node(value: str) -> Callable[[dict[str, Any]], Any]:
    async def node(state: dict[str, Any]) -> dict[str, list[str]]:
        return {"log": [value]}

    return node


def counter_chain() -> gx.Graph:
    b = gx.GraphBuilder("w1-chain")
    names = [f"n{i}" for i in range(CHAIN)]
    for name in names:
        b.node(name, _incr_node())
    for a, c in itertools.pairwise(names):
        b.edge(a, c)
    return b.start(names[0]).end(names[-1]).build()


def log_chain(n_nodes: int, barrier_before_last: bool = False) -> gx.Graph:
    """n0 .. n{n_nodes-1}, node i appending entry(i); optionally a barrier `gate` before the
    last node (W6)."""
    ent = entries(n_nodes)
    b = gx.GraphBuilder("w3-chain").reducer("log", gx.reducers.append)
    names = [f"n{i}" for i in range(n_nodes)]
    for i, name in enumerate(names):
        b.node(name, _append_node(ent[i]))
    order = list(names)
    if barrier_before_last:
        b.barrier("gate")
        order.insert(len(order) - 1, "gate")
    for a, c in itertools.pairwise(order):
        b.edge(a, c)
    return b.start(order[0]).end(order[-1]).build()


def fanout_graph(sleep: bool) -> gx.Graph:
    async def fan(state: dict[str, Any]) -> None:
        return None

    def branch(i: int) -> Callable[[dict[str, Any]], Any]:
        if sleep:

            async def fn(state: dict[str, Any]) -> dict[str, list[int]]:
                await anyio.sleep(0.01)
                return {"items": [i]}

        else:

            async def fn(state: dict[str, Any]) -> dict[str, list[int]]:
                return {"items": [i]}

        return fn

    async def join(state: dict[str, Any]) -> None:
        assert len(state["items"]) == FANOUT, len(state["items"])

    return (
        gx.GraphBuilder("w4-fanout")
        .node("fan", fan)
        .parallel("par", {f"b{i}": branch(i) for i in range(FANOUT)})
        .node("join", join)
        .edge("fan", "par")
        .edge("par", "join")
        .reducer("items", gx.reducers.append)
        .start("fan")
        .end("join")
        .build()
    )


def approval_graph() -> gx.Graph:
    async def a(state: dict[str, Any]) -> dict[str, int]:
        return {"x": 1}

    async def c(state: dict[str, Any]) -> dict[str, bool]:
        return {"done": state["approval"]["decision"] == "approve"}

    return (
        gx.GraphBuilder("w5-approval")
        .node("a", a)
        .barrier("approval")
        .node("c", c)
        .edge("a", "approval")
        .edge("approval", "c")
        .start("a")
        .end("c")
        .build()
    )


def _executor(store: Any, durability: str = "sync") -> gx.GraphExecutor:
    return gx.GraphExecutor(
        store=store,
        policy=gx.CheckpointPolicy(every_step=True, durability=durability),
        max_steps=MAX_STEPS,
    )


async def _open(store: Any) -> None:
    """Make the lazily-opened store create its file and schema now (outside timing)."""
    await store.get_run("__bench_prime__")


async def _drive(run: Any, stop_at_barrier: bool = False) -> None:
    """Consume a run's events, approving every barrier (or leaving at the first one)."""
    async for ev in run:
        if isinstance(ev, gx.BarrierWaiting):
            if stop_at_barrier:
                return
            await run.handle.approve(ev.barrier_id)


# ---------------------------------------------------------------- workloads


async def w1(tmp: pathlib.Path) -> dict[str, float]:
    graph = counter_chain()
    ex = gx.GraphExecutor(max_steps=MAX_STEPS)
    runs = count("W1")
    results = []
    t0 = time.perf_counter()
    for _ in range(runs):
        results.append(await ex.execute(graph, {"n": 0}))
    dt = time.perf_counter() - t0
    assert all(r.state["n"] == CHAIN for r in results), results[0].state
    return {"us_per_step": dt / (runs * CHAIN) * 1e6}


async def _w2(tmp: pathlib.Path, durability: str) -> dict[str, float]:
    db = fresh_dir(tmp, f"gx-w2-{durability}") / "w2.db"
    runs = count("W2")
    graph = counter_chain()
    store = gx.SQLiteStore(db)
    ex = _executor(store, durability)
    await _open(store)
    traces = [f"w2-{k}" for k in range(runs)]
    results = []
    t0 = time.perf_counter()
    for t in traces:
        results.append(await ex.execute(graph, {"n": 0}, trace_id=t))
    dt = time.perf_counter() - t0
    assert all(r.state["n"] == CHAIN for r in results), results[0].state
    serialized = 0
    for t in traces:
        serialized += sum(c.bytes for c in await ex.history(t))
    await store.aclose()
    return {
        "us_per_step": dt / (runs * CHAIN) * 1e6,
        "disk_bytes": disk_bytes(db),
        "serialized_bytes": serialized,
    }


async def w2(tmp: pathlib.Path) -> dict[str, float]:
    return await _w2(tmp, "sync")


async def w2_async(tmp: pathlib.Path) -> dict[str, float]:
    return await _w2(tmp, "async")


async def w3(tmp: pathlib.Path) -> dict[str, float]:
    db = fresh_dir(tmp, "gx-w3") / "w3.db"
    graph = log_chain(CHAIN)
    store = gx.SQLiteStore(db)
    ex = _executor(store)
    await _open(store)
    t0 = time.perf_counter()
    result = await ex.execute(graph, {"log": []}, trace_id="w3")
    dt = time.perf_counter() - t0
    assert result.state["log"] == list(entries(CHAIN)), len(result.state["log"])
    serialized = sum(c.bytes for c in await ex.history("w3"))
    await store.aclose()
    return {
        "us_per_step": dt / CHAIN * 1e6,
        "disk_bytes_per_step": disk_bytes(db) / CHAIN,
        "serialized_bytes_per_step": serialized / CHAIN,
    }


async def _w4(sleep: bool, runs: int) -> dict[str, float]:
    graph = fanout_graph(sleep)
    ex = gx.GraphExecutor(max_steps=MAX_STEPS)
    results = []
    t0 = time.perf_counter()
    for _ in range(runs):
        results.append(await ex.execute(graph, {"items": []}))
    dt = time.perf_counter() - t0
    assert all(sorted(r.state["items"]) == list(range(FANOUT)) for r in results)
    return {"ms_per_run": dt / runs * 1e3}


async def w4(tmp: pathlib.Path) -> dict[str, float]:
    return await _w4(False, count("W4"))


async def w4_sleep(tmp: pathlib.Path) -> dict[str, float]:
    return await _w4(True, count("W4-sleep"))


async def w5(tmp: pathlib.Path) -> dict[str, float]:
    db = fresh_dir(tmp, "gx-w5") / "w5.db"
    store = gx.SQLiteStore(db)
    await _open(store)
    return await _w5(_executor(store), store)


async def w5_nostore(tmp: pathlib.Path) -> dict[str, float]:
    """W5 without a store: the barrier's in-process round trip alone (graphexec only:
    LangGraph needs a checkpointer for interrupts)."""
    return await _w5(gx.GraphExecutor(max_steps=MAX_STEPS), None)


async def _w5(ex: gx.GraphExecutor, store: Any) -> dict[str, float]:
    cycles = count("W5")
    graph = approval_graph()
    traces = [f"w5-{k}" for k in range(cycles)]
    results = []
    t0 = time.perf_counter()
    for t in traces:
        async with ex.execute_stream(graph, {"x": 0}, trace_id=t) as run:
            await _drive(run)
        results.append(run.result)
    dt = time.perf_counter() - t0
    if store is not None:
        await store.aclose()
    assert all(r.status == "completed" and r.state["done"] is True for r in results), results[0]
    return {"ms_per_cycle": dt / cycles * 1e3}


async def w6(tmp: pathlib.Path) -> dict[str, float]:
    db = fresh_dir(tmp, "gx-w6") / "w6.db"
    graph = log_chain(CHAIN + 1, barrier_before_last=True)  # n0 .. n199, gate, n200
    trace = "w6"
    # Untimed: run the 200 appending steps, leave while the barrier waits, close the store.
    store = gx.SQLiteStore(db)
    ex = _executor(store)
    async with ex.execute_stream(graph, {"log": []}, trace_id=trace) as run:
        await _drive(run, stop_at_barrier=True)
    assert run.result.status == "waiting", run.result.status
    await store.aclose()
    # Timed: a restarted process opens the file, loads the run, resumes the last step.
    t0 = time.perf_counter()
    store = gx.SQLiteStore(db)
    ex = _executor(store)
    t1 = time.perf_counter()
    snap = await ex.get_state(trace)
    t2 = time.perf_counter()
    async with ex.resume_from(graph, trace) as run:
        await _drive(run)
    t3 = time.perf_counter()
    await store.aclose()
    assert len(snap.state["log"]) == CHAIN, len(snap.state["log"])
    assert run.result.status == "completed", run.result.status
    assert run.result.state["log"] == list(entries(CHAIN + 1)), len(run.result.state["log"])
    open_ms, load_ms, step_ms = (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3
    return {
        "open_ms": open_ms,
        "load_ms": load_ms,
        "load_step_ms": load_ms + step_ms,
        "open_load_step_ms": open_ms + load_ms + step_ms,
    }


def w7(tmp: pathlib.Path) -> dict[str, float]:
    # pip byte-compiles what it installs (LangGraph), but an editable graphexec is compiled on
    # import, and never cached where PYTHONDONTWRITEBYTECODE is set (as on these machines):
    # compile it first so both sides import from bytecode.
    package = pathlib.Path(gx.__file__).parent
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True, env=env)
    return import_figures("import graphexec")


# ---------------------------------------------------------------- memory check (graphexec only)


def _state_bytes(log: list[str]) -> int:
    return sys.getsizeof(log) + sum(sys.getsizeof(s) for s in log)


async def mem(tmp: pathlib.Path) -> dict[str, float]:
    """A looping node (conditional edge back to itself) run for N steps with every-step SQLite
    checkpoints and a state growing by one small string a step; tracemalloc samples at N/10 and
    N steps. `excess_bytes` = memory growth between the samples minus the state's own growth;
    `exec_log_growth_bytes` is the part held by `GraphResult.execution_log` (one entry a step),
    `unexplained_bytes` the rest."""
    n = count("MEM")
    early = n // 10
    db = fresh_dir(tmp, "gx-mem") / "mem.db"
    samples: dict[int, tuple[int, int, int]] = {}

    async def step(state: dict[str, Any]) -> dict[str, Any]:
        i = state["i"] + 1
        if i in (early, n):
            log = state["log"]
            gc.collect()
            cur, peak = tracemalloc.get_traced_memory()
            samples[i] = (cur, peak, _state_bytes(log))
            tracemalloc.reset_peak()
        return {"i": i, "log": [f"{i:016d}"]}

    async def done(state: dict[str, Any]) -> None:
        return None

    graph = (
        gx.GraphBuilder("mem-loop")
        .node("step", step)
        .node("done", done)
        .edge("step", "step", when=lambda s: s["i"] < n)
        .edge("step", "done")
        .reducer("log", gx.reducers.append)
        .start("step")
        .end("done")
        .build()
    )
    store = gx.SQLiteStore(db)
    # The execution log is the one per-step list a run keeps, and the issue allows turning it
    # off for this check: with it on, it adds about 160 B a step (see exec_log_growth_bytes).
    ex = gx.GraphExecutor(
        store=store,
        policy=gx.CheckpointPolicy(every_step=True),
        max_steps=max(MAX_STEPS, n + 10),
        execution_log=False,
    )
    await _open(store)
    gc.collect()
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        result = await ex.execute(graph, {"i": 0, "log": []}, trace_id="mem")
        dt = time.perf_counter() - t0
    finally:
        tracemalloc.stop()
    await store.aclose()
    assert result.state["i"] == n and len(result.state["log"]) == n, result.state["i"]
    (cur1, _, st1), (cur2, peak2, st2) = samples[early], samples[n]
    growth, state_growth = cur2 - cur1, st2 - st1
    # GraphResult.execution_log keeps one entry per step: O(steps) by design, not state.
    exec_log = list(getattr(result, "execution_log", []))
    log_growth = 8 * (len(exec_log) - early) + sum(
        sys.getsizeof(e) + sum(sys.getsizeof(x) for x in (e.step, e.start, e.end))
        for e in exec_log[early:n]
    )
    return {
        "steps": n,
        "current_early_mb": cur1 / 2**20,
        "current_end_mb": cur2 / 2**20,
        "peak_between_mb": peak2 / 2**20,
        "state_growth_mb": state_growth / 2**20,
        "excess_bytes": growth - state_growth,
        "excess_bytes_per_step": (growth - state_growth) / (n - early),
        "exec_log_growth_bytes": log_growth,
        "unexplained_bytes": growth - state_growth - log_growth,
        "us_per_step_traced": dt / n * 1e6,
    }


WORKLOADS: dict[str, Callable[[pathlib.Path], Any]] = {
    "W1": w1,
    "W2": w2,
    "W2-async": w2_async,
    "W3": w3,
    "W4": w4,
    "W4-sleep": w4_sleep,
    "W5": w5,
    "W5-nostore": w5_nostore,
    "W6": w6,
    "W7": w7,
}
