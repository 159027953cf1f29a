"""A subprocess for tests/checkpoint/test_child_barriers_crash.py: a map over a graph whose
five items each wait at an approval; started, resumed, killed by the test.

    child_worker.py DB TRACE run                 start the run; print WAITING <id> per wait
    child_worker.py DB TRACE resume [ID DECISION] resume it; decide ID in-process when it
                                                  waits (approve or reject); print DONE <i>
                                                  when item i's last node ends, SAVED <trigger>
                                                  per checkpoint, RESULT <json>
                                                  when the run completes

Every execution of an item's node appends "<node> <i>" to DB.side (fsync'd), so the test
sees which item ran what, and how often.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio

import graphexec as gx


def item_graph(side: str) -> gx.Graph:
    def mark(node: str, i: int) -> None:
        with open(side, "a") as f:
            f.write(f"{node} {i}\n")
            f.flush()
            os.fsync(f.fileno())

    def prep(s: dict[str, Any]) -> dict[str, Any]:
        mark("prep", s["i"])
        return {"n": s["i"] * 10}

    def act(s: dict[str, Any]) -> dict[str, Any]:
        mark("act", s["i"])
        return {"out": s["n"] + 1}

    def skip(s: dict[str, Any]) -> dict[str, Any]:
        mark("skip", s["i"])
        return {"out": None}

    return (
        gx.GraphBuilder("tool")
        .node("prep", prep, inline=True)
        .barrier("approve", prompt=lambda s: {"call": s["i"]})
        .node("act", act, inline=True)
        .node("skip", skip, inline=True)
        .edge("prep", "approve")
        .edge("approve", "act", when=lambda s: s["approve"]["decision"] == "approve")
        .edge("approve", "skip")
        .start("prep")
        .end("act", "skip")
        .build()
    )


def graph(side: str) -> gx.Graph:
    return (
        gx.GraphBuilder("agent")
        .map("tools", item_graph(side), over="calls", into="results", output="out")
        .start("tools")
        .end("tools")
        .build()
    )


ITEMS = 5


async def main(db: str, trace_id: str, mode: str, *decide: str) -> None:
    g = graph(f"{db}.side")
    policy = gx.CheckpointPolicy(durability="sync")
    async with gx.SQLiteStore(db) as store:
        ex = gx.GraphExecutor(
            store=store, policy=policy, lease_ttl=0.5, decision_poll_interval=0.02
        )
        if mode == "run":
            state = {"calls": [{"i": i} for i in range(ITEMS)]}
            async with ex.execute_stream(g, state, trace_id=trace_id) as run:
                async for event in run:
                    if isinstance(event, gx.BarrierWaiting):
                        print("WAITING", event.barrier_id, flush=True)
            return
        while True:
            try:
                async with ex.resume_from(g, trace_id) as run:
                    async for event in run:
                        if isinstance(event, gx.BarrierWaiting):
                            print("WAITING", event.barrier_id, flush=True)
                            if decide and event.barrier_id == decide[0]:
                                verdict = (
                                    gx.Approve() if decide[1] == "approve" else gx.Reject("no")
                                )
                                await run.handle.decide(decide[0], verdict)
                        elif isinstance(event, gx.CheckpointSaved):
                            print("SAVED", event.trigger, flush=True)
                        elif isinstance(event, gx.NodeEnd) and event.node.endswith(
                            ("/act", "/skip")
                        ):
                            print("DONE", event.node.split("/")[0], flush=True)
                break
            except gx.RunLocked:
                await anyio.sleep(0.05)
        result = run.result
        assert result is not None
        print("RESULT " + json.dumps({"status": result.status, "state": result.state}), flush=True)


if __name__ == "__main__":
    db, trace_id, mode, *decide = sys.argv[1:]
    anyio.run(main, db, trace_id, mode, *decide)
