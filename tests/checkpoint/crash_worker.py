"""A process for test_crash.py to kill: ``python crash_worker.py <db> <trace_id> <mode>``.

Modes:

- ``run``: run a 60-node chain on the SQLite file ``<db>`` with a checkpoint after every step.
  Each node appends its name to ``log`` (append reducer) and, after its work, appends a line
  ``"<step> <node>"`` to ``<db>.side`` (flushed and fsynced), so the test can count executions.
  Prints ``STARTED`` once the first checkpoint is committed.
- ``resume``: resume the chain run by its trace id (retrying while a dead process's lease
  lasts) to the end.
- ``barrier``: run ``prep -> approve (barrier) -> send | discard``; prints
  ``WAITING <barrier_id>`` after the BarrierWaiting event, then waits for a decision.
- ``barrier-resume``: resume that run to the end.

Every mode that finishes prints ``RESULT <json>`` (status, state, steps, seconds, and whether a
barrier was waited at).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio

import graphexec as gx

NODES = 60
LEASE_TTL = 0.5
"""Short, so a resume after a kill waits at most this long for the dead process's lease."""
WORK_SECONDS = 0.003


def _node(name: str, side: str) -> Callable[[Mapping[str, Any], gx.NodeContext], dict[str, Any]]:
    def node(state: Mapping[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
        time.sleep(WORK_SECONDS)  # the node's work
        with open(side, "a", encoding="utf-8") as f:
            f.write(f"{ctx.step} {name}\n")
            f.flush()
            os.fsync(f.fileno())
        return {"log": [name]}

    return node


def chain_graph(side: str) -> gx.Graph:
    """``n00 -> n01 -> ... -> n59``; node ``n<i>`` runs at step ``i + 1``."""
    names = [f"n{i:02d}" for i in range(NODES)]
    builder = gx.GraphBuilder("crash-chain")
    for name in names:
        builder.node(name, _node(name, side))
    for source, target in itertools.pairwise(names):
        builder.edge(source, target)
    return builder.reducer("log", gx.reducers.append).start(names[0]).end(names[-1]).build()


def barrier_graph() -> gx.Graph:
    """``prep -> approve (barrier) -> send | discard``."""

    async def prep(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"draft": "refund 42"}

    async def send(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"sent": True}

    async def discard(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"sent": False}

    def approved(state: Mapping[str, Any]) -> bool:
        return bool(state["approve"]["decision"] == "approve")

    return (
        gx.GraphBuilder("crash-barrier")
        .node("prep", prep)
        .barrier("approve", prompt=lambda s: {"text": s["draft"]})
        .node("send", send)
        .node("discard", discard)
        .edge("prep", "approve")
        .edge("approve", "send", when=approved)
        .edge("approve", "discard")
        .start("prep")
        .end("send", "discard")
        .build()
    )


def say(*parts: object) -> None:
    """One line to the test, flushed at once."""
    print(*parts, flush=True)


def report(run: gx.Run, t0: float, events: list[str]) -> None:
    """The ``RESULT`` line."""
    result = run.result
    say(
        "RESULT",
        json.dumps(
            {
                "status": result.status,
                "state": result.state,
                "steps": result.steps,
                "seconds": time.perf_counter() - t0,
                "waited": "BarrierWaiting" in events,
                "error": None if result.error is None else repr(result.error),
            }
        ),
    )


async def resume(ex: gx.GraphExecutor, graph: gx.Graph, trace_id: str) -> None:
    """Resume to the end, retrying while the killed process's lease has not expired."""
    deadline = time.monotonic() + 20
    while True:
        t0 = time.perf_counter()
        events: list[str] = []
        try:
            async with ex.resume_from(graph, trace_id) as run:
                async for event in run:
                    events.append(type(event).__name__)
        except gx.RunLocked:
            if time.monotonic() > deadline:
                raise
            await anyio.sleep(0.05)
            continue
        report(run, t0, events)
        return


async def main(db: str, trace_id: str, mode: str) -> None:
    """Run the mode on the SQLite file ``db`` (side effects journalled next to it)."""
    async with gx.SQLiteStore(db) as store:
        await run_mode(store, f"{db}.side", trace_id, mode)


async def run_mode(store: gx.CheckpointStore, side: str, trace_id: str, mode: str) -> None:
    """Run the mode on ``store`` (pg_crash_worker.py runs the same on Postgres)."""
    ex = gx.GraphExecutor(
        store=store,
        policy=gx.CheckpointPolicy(every_step=True),
        lease_ttl=LEASE_TTL,
        decision_poll_interval=0.05,
    )
    if mode == "run":
        t0 = time.perf_counter()
        events: list[str] = []
        async with ex.execute_stream(chain_graph(side), {"log": []}, trace_id=trace_id) as run:
            async for event in run:
                events.append(type(event).__name__)
                if isinstance(event, gx.CheckpointSaved) and event.seq == 1:
                    say("STARTED")
        report(run, t0, events)
    elif mode == "resume":
        await resume(ex, chain_graph(side), trace_id)
    elif mode == "barrier":
        async with ex.execute_stream(barrier_graph(), trace_id=trace_id) as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    say("WAITING", event.barrier_id)
    elif mode == "barrier-resume":
        await resume(ex, barrier_graph(), trace_id)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
