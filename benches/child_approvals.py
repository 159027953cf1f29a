"""Parallel approvals inside map items: 100 items of one run each wait at an approval, all at
once; they are decided one by one (approve, then wait until that item's child run has
finished). Compared with W5's approval round trip (BENCHMARKS.md: one run per cycle,
a -> approval -> c), measured in the same process.

    python benches/child_approvals.py [--items 100] [--reps 5]

Variants:

- ``W5``: 100 sequential approval cycles, SQLite store (ms per cycle);
- ``children``: one run, a map over a graph with a barrier, ``--items`` items waiting
  together, decided one by one through the handle, SQLite store (ms per decision: from the
  decision to the item's BranchCompleted; the wait of all items before the first decision
  is reported apart, as ms per item);
- ``children-nostore``: the same without a store.

Prints one table: median [min-max] over the reps, and the ratio of ``children`` to ``W5``
(the goal: within 2x).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

import graphexec as gx


def approval_graph() -> gx.Graph:
    return (
        gx.GraphBuilder("w5")
        .node("a", lambda s: {"x": 1}, inline=True)
        .barrier("approve")
        .node("c", lambda s: {"done": True}, inline=True)
        .edge("a", "approve")
        .edge("approve", "c")
        .start("a")
        .end("c")
        .build()
    )


def children_graph() -> gx.Graph:
    item = (
        gx.GraphBuilder("tool")
        .node("prep", lambda s: {"n": s["i"]}, inline=True)
        .barrier("approve")
        .node("act", lambda s: {"out": s["n"] + 1}, inline=True)
        .edge("prep", "approve")
        .edge("approve", "act")
        .start("prep")
        .end("act")
        .build()
    )
    return (
        gx.GraphBuilder("agent")
        .map("tools", item, over="calls", into="results", output="out")
        .start("tools")
        .end("tools")
        .build()
    )


async def w5(tmp: Path, cycles: int) -> float:
    graph = approval_graph()
    async with gx.SQLiteStore(tmp / "w5.db") as store:
        ex = gx.GraphExecutor(store=store)
        t0 = time.perf_counter()
        for k in range(cycles):
            async with ex.execute_stream(graph, {}, trace_id=f"w5-{k}") as run:
                async for event in run:
                    if isinstance(event, gx.BarrierWaiting):
                        await run.handle.approve(event.barrier_id)
            assert run.result is not None and run.result.state["done"] is True
        return (time.perf_counter() - t0) / cycles * 1e3


async def children(store: Any, items: int) -> tuple[float, float]:
    """(ms per item until all wait, ms per decision)."""
    ex = gx.GraphExecutor(store=store)
    graph = children_graph()
    waiting: list[str] = []
    per_decision: list[float] = []
    t0 = time.perf_counter()
    t_wait = 0.0
    async with ex.execute_stream(graph, {"calls": [{"i": i} for i in range(items)]}) as run:
        events = run.__aiter__()
        async for event in events:
            if isinstance(event, gx.BarrierWaiting):
                waiting.append(event.barrier_id)
                if len(waiting) == items:
                    break
        t_wait = time.perf_counter() - t0
        for barrier in waiting:
            item = barrier.split("/")[0]
            t1 = time.perf_counter()
            await run.handle.approve(barrier)
            async for event in events:
                if isinstance(event, gx.BranchCompleted) and event.branch == item:
                    break
            per_decision.append(time.perf_counter() - t1)
        async for _event in events:
            pass
    assert run.result is not None and run.result.status == "completed"
    assert run.result.state["results"] == [i + 1 for i in range(items)]
    return t_wait / items * 1e3, statistics.fmean(per_decision) * 1e3


async def main(items: int, reps: int) -> None:
    rows: dict[str, list[float]] = {
        "W5 ms/cycle": [],
        "children ms/decision": [],
        "children ms/item until all wait": [],
        "children-nostore ms/decision": [],
        "children-nostore ms/item until all wait": [],
    }
    for rep in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            rows["W5 ms/cycle"].append(await w5(Path(tmp), 100))
            async with gx.SQLiteStore(Path(tmp) / f"c{rep}.db") as store:
                wait, dec = await children(store, items)
            rows["children ms/decision"].append(dec)
            rows["children ms/item until all wait"].append(wait)
            wait, dec = await children(None, items)
            rows["children-nostore ms/decision"].append(dec)
            rows["children-nostore ms/item until all wait"].append(wait)
    print(f"{items} parallel approvals in one run, {reps} reps: median [min-max]")
    print(f"{'metric':42} {'value':>24}")
    for name, values in rows.items():
        med = statistics.median(values)
        print(f"{name:42} {med:8.3f} [{min(values):.3f}-{max(values):.3f}]")
    ratio = statistics.median(rows["children ms/decision"]) / statistics.median(rows["W5 ms/cycle"])
    print(f"{'children ms/decision / W5 ms/cycle':42} {ratio:8.2f}x (goal: <= 2x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.items, args.reps)
