"""Ownership and conversations, graphexec alone (issue 9): prints a table.

- ``kill_to_resume``: a child process drives a run on a SQLite file with an hour-long lease and
  is SIGKILLed while a node runs; the time from the kill to a completed ``resume_from`` in this
  process (the dead owner is detected at once: no waiting for the lease). Goal: under 1 s.
- ``approval``: the W5 cycle (start, wait at a barrier, approve, run to the end; a checkpoint
  every step), which now gives the lease up while waiting and takes it back on the decision.
- ``turn``: one conversation turn on one trace (``execute`` on a completed trace: restore,
  apply the input, two nodes, checkpoints), SQLite.

Usage: ``.venv/bin/python benches/ownership.py [--reps 5]``. Medians [min-max] of the reps.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import structlog

import graphexec as gx

CHILD = """
import sys, anyio, graphexec as gx
sys.path.insert(0, {here!r})
from ownership import hold_graph
async def main():
    async def hold(s):
        print("HOLDING", flush=True)
        await anyio.sleep(3600)
    async with gx.SQLiteStore({db!r}) as store:
        ex = gx.GraphExecutor(store=store, lease_ttl=3600,
                              policy=gx.CheckpointPolicy(every_step=True))
        async with ex.execute_stream(hold_graph(hold), trace_id="k") as run:
            async for _ in run:
                pass
anyio.run(main)
"""


async def _a(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"log": ["a"]}


async def _quick(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"log": ["hold"]}


def hold_graph(hold: Any = _quick) -> gx.Graph:
    """``a -> hold -> b`` (the node functions do not change the graph's hash)."""
    return (
        gx.GraphBuilder("hold")
        .node("a", _a)
        .node("hold", hold)
        .node("b", _a)
        .edge("a", "hold")
        .edge("hold", "b")
        .reducer("log", gx.reducers.append)
        .start("a")
        .end("b")
        .build()
    )


def start_and_kill(db: Path) -> float:
    """Start the driving child, wait until its node runs, SIGKILL it; the kill's time."""
    code = CHILD.format(here=str(Path(__file__).parent), db=str(db))
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("HOLDING"):
            break
    else:
        raise RuntimeError(proc.communicate()[1])
    t0 = time.perf_counter()
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    return t0


async def kill_to_resume(tmp: Path) -> float:
    db = tmp / "kill.db"
    t0 = start_and_kill(db)
    async with gx.SQLiteStore(db) as store:
        ex = gx.GraphExecutor(store=store)
        async with ex.resume_from(hold_graph(), "k") as run:
            async for _ in run:
                pass
    dt = time.perf_counter() - t0
    assert run.result.status == "completed", run.result
    return dt * 1e3


async def approval_cycle(tmp: Path, cycles: int = 50) -> float:
    graph = (
        gx.GraphBuilder("w5")
        .node("a", _a)
        .barrier("gate")
        .node("c", _a)
        .edge("a", "gate")
        .edge("gate", "c")
        .reducer("log", gx.reducers.append)
        .start("a")
        .end("c")
        .build()
    )
    async with gx.SQLiteStore(tmp / "w5.db") as store:
        ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
        await store.runs()  # open the file before timing
        t0 = time.perf_counter()
        for k in range(cycles):
            async with ex.execute_stream(graph, trace_id=f"w5-{k}") as run:
                async for event in run:
                    if isinstance(event, gx.BarrierWaiting):
                        await run.handle.approve(event.barrier_id)
        return (time.perf_counter() - t0) / cycles * 1e3


async def turn(tmp: Path, turns: int = 100) -> float:
    graph = (
        gx.GraphBuilder("chat")
        .node("listen", _a)
        .node("reply", _a)
        .edge("listen", "reply")
        .reducer("log", gx.reducers.append)
        .start("listen")
        .end("reply")
        .build()
    )
    async with gx.SQLiteStore(tmp / "chat.db") as store:
        ex = gx.GraphExecutor(store=store)
        await ex.execute(graph, {"log": []}, trace_id="c")
        t0 = time.perf_counter()
        for i in range(turns):
            result = await ex.execute(graph, {"log": [f"m{i}"]}, trace_id="c")
        dt = time.perf_counter() - t0
    assert result.turn == turns + 1
    return dt / turns * 1e3


def row(name: str, values: list[float], goal: str) -> str:
    med = statistics.median(values)
    return f"{name:<16} {med:>9.2f} [{min(values):.2f}-{max(values):.2f}]   {goal}"


async def main(reps: int) -> None:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(40)  # errors only
    )
    figures: dict[str, list[float]] = {"kill_to_resume": [], "approval": [], "turn": []}
    for rep in range(reps + 1):  # the first is a warm-up
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            got = {
                "kill_to_resume": await kill_to_resume(tmp),
                "approval": await approval_cycle(tmp),
                "turn": await turn(tmp),
            }
        if rep:
            for k, v in got.items():
                figures[k].append(v)
    print(f"graphexec {gx.__version__}; Python {sys.version.split()[0]}; {reps} reps")
    print(f"{'metric (ms)':<16} {'median [min-max]':>22}   goal")
    print(row("kill_to_resume", figures["kill_to_resume"], "under 1,000 ms (issue 9)"))
    print(row("approval", figures["approval"], "W5 cycle, every-step checkpoints"))
    print(row("turn", figures["turn"], "one turn on a completed trace (SQLite)"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    anyio.run(main, parser.parse_args().reps)
