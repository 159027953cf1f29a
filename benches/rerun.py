"""Re-run benchmarks (issue 12): planning a 1,000-execution trace, and a re-run from the middle
of a 200-node chain where nothing downstream changes. Both on a real SQLite file.

    .venv/bin/python benches/rerun.py            # 1 warm-up + 7 reps, prints a table
    .venv/bin/python benches/rerun.py --reps 3

- plan-1000: a trace of 1,000 node executions (a 10-node chain looped 100 times, each node
  reading and writing its own key and the loop counter), then ``plan_rerun`` from the node
  whose executions sit in the middle; timed: the whole call (reading the trace's checkpoints
  back from SQLite, replaying them, planning). Goal: under 50 ms.
- rerun-chain-200: W1's 200-node counter chain, checkpointed (the default policy: the start and
  the end), then ``rerun`` from node 100, whose output does not change; timed: entering
  ``ex.rerun`` to the end of the run (reading the source back, one node executed, 199
  executions replayed, two checkpoints committed). Goal: 1 node executed, under 5 ms.
- rerun-chain-200-memory: the same on a MemoryStore: what the re-run costs besides SQLite.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog

import graphexec as gx

LOOP_NODES = 10
LOOPS = 100
CHAIN = 200


def _loop_graph() -> gx.Graph:
    b = gx.GraphBuilder("loop1000", fingerprint="auto")
    for i in range(LOOP_NODES):

        async def node(state: Any, i: int = i) -> dict[str, Any]:
            out = {f"k{i}": state.get(f"k{i}", 0) + state["round"]}
            if i == LOOP_NODES - 1:
                out["round"] = state["round"] + 1
            return out

        b.node(f"n{i}", node)
        if i:
            b.edge(f"n{i - 1}", f"n{i}")
    b.edge(f"n{LOOP_NODES - 1}", "n0", when=lambda s: s["round"] < LOOPS)
    b.node("end", lambda s: None, inline=True).edge(f"n{LOOP_NODES - 1}", "end")
    return b.start("n0").end("end").build()


def _chain_graph() -> gx.Graph:
    b = gx.GraphBuilder("chain200", fingerprint="auto")
    for i in range(CHAIN):

        async def node(state: Any) -> dict[str, Any]:
            return {"n": state["n"] + 1}

        b.node(f"n{i}", node)
        if i:
            b.edge(f"n{i - 1}", f"n{i}")
    return b.start("n0").end(f"n{CHAIN - 1}").build()


async def plan_1000(tmp: pathlib.Path) -> dict[str, float]:
    graph = _loop_graph()
    async with gx.SQLiteStore(tmp / "plan.db") as store:
        ex = gx.GraphExecutor(store=store, max_steps=5000)
        result = await ex.execute(graph, {"round": 0}, trace_id="src")
        assert result.steps == LOOP_NODES * LOOPS + 1, result.steps
        t0 = time.perf_counter()
        plan = await ex.plan_rerun(graph, "src", "n5")
        dt = time.perf_counter() - t0
    assert len(plan.rows) == LOOP_NODES * LOOPS + 1
    return {"ms": dt * 1e3, "rows": len(plan.rows), "to_run": plan.counts()["run"]}


async def rerun_chain(tmp: pathlib.Path) -> dict[str, float]:
    return await _rerun_chain(gx.SQLiteStore(tmp / "chain.db"))


async def rerun_chain_memory(tmp: pathlib.Path) -> dict[str, float]:
    return await _rerun_chain(gx.MemoryStore())


async def _rerun_chain(opened: gx.CheckpointStore) -> dict[str, float]:
    graph = _chain_graph()
    async with opened as store:
        ex = gx.GraphExecutor(store=store)
        await ex.execute(graph, {"n": 0}, trace_id="src")
        t0 = time.perf_counter()
        async with ex.rerun(graph, "src", f"n{CHAIN // 2}") as run:
            async for _ in run:
                pass
        dt = time.perf_counter() - t0
    assert run.result is not None and run.result.state["n"] == CHAIN
    return {
        "ms": dt * 1e3,
        "executed": len(run.result.execution_log),
        "reused": run.result.reused,
    }


BENCHES: dict[str, tuple[Callable[[pathlib.Path], Awaitable[dict[str, float]]], str]] = {
    "plan-1000": (plan_1000, "ms < 50"),
    "rerun-chain-200": (rerun_chain, "1 executed, ms < 5"),
    "rerun-chain-200-memory": (rerun_chain_memory, "(the same without SQLite)"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    rows = []
    with tempfile.TemporaryDirectory(prefix="gx-rerun-") as d:
        for name, (fn, goal) in BENCHES.items():
            figures: list[dict[str, float]] = []
            for rep in range(args.reps + 1):
                tmp = pathlib.Path(d) / f"{name}-{rep}"
                tmp.mkdir()
                out = anyio.run(fn, tmp)
                if rep:  # the first is a warm-up
                    figures.append(out)
            ms = [f["ms"] for f in figures]
            extra = {k: v for k, v in figures[-1].items() if k != "ms"}
            rows.append(
                (
                    name,
                    f"{statistics.median(ms):.2f} [{min(ms):.2f}-{max(ms):.2f}]",
                    ", ".join(f"{k}={v:g}" for k, v in extra.items()),
                    goal,
                )
            )
    head = ("bench", "ms median [min-max]", "figures", "goal")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    for line in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    print(f"({args.reps} reps after 1 warm-up; Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
