"""A process for test_retry_crash.py: ``python retry_worker.py <db> <trace_id> <mode>``.

The graph is one node, ``call``, with ``Retry(attempts=4, backoff=30, factor=2,
jitter=False)``; it appends ``ctx.attempt`` to ``<db>.side`` (fsynced) on every call, fails
with ConnectionError on attempts 1 to 3 and succeeds on attempt 4.

- ``run``: start the run on the real clock; print ``BACKOFF <attempt> <retry_at>`` once the
  checkpoint taken before the first backoff (30 s) is committed, then keep waiting (the
  test kills it there).
- ``fan-run`` / ``fan-resume``: the same with a parallel node ``p`` whose branch ``good``
  succeeds at once and whose branch ``flaky`` fails on attempts 1 and 2 (``Retry(attempts=3)``,
  the same backoffs); each branch call appends ``"<branch> <attempt>"`` to the side file.
- ``resume``: resume the trace with a FakeClock that starts at the real time (the remaining
  backoff is measured against the checkpointed next-attempt time, without waiting for it);
  print ``RESULT <json>`` (status, state, the clock's sleeps).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import anyio

import graphexec as gx
from graphexec.testing import FakeClock

POLICY = gx.Retry(attempts=4, backoff=30.0, factor=2.0, max_backoff=300.0, jitter=False)


def graph(side: str) -> gx.Graph:
    def call(state: Mapping[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
        with open(side, "a", encoding="utf-8") as f:
            f.write(f"{ctx.attempt}\n")
            f.flush()
            os.fsync(f.fileno())
        if ctx.attempt < 4:
            raise ConnectionError(f"attempt {ctx.attempt} failed")
        return {"done": ctx.attempt}

    return (
        gx.GraphBuilder("retry-crash")
        .node("call", call, retry=POLICY)
        .start("call")
        .end("call")
        .build()
    )


def fan_graph(side: str) -> gx.Graph:
    def branch(name: str, fails: int) -> Any:
        def fn(state: Mapping[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
            with open(side, "a", encoding="utf-8") as f:
                f.write(f"{name}-{ctx.attempt}\n")
                f.flush()
                os.fsync(f.fileno())
            if ctx.attempt <= fails:
                raise ConnectionError(f"{name} attempt {ctx.attempt} failed")
            return {name: ctx.attempt}

        return fn

    return (
        gx.GraphBuilder("retry-fan")
        .parallel(
            "p",
            {"good": branch("good", 0), "flaky": branch("flaky", 2)},
            retry=gx.Retry(attempts=3, backoff=30.0, factor=2.0, max_backoff=300.0, jitter=False),
        )
        .start("p")
        .end("p")
        .build()
    )


async def main(db: str, trace_id: str, mode: str) -> None:
    g = fan_graph(f"{db}.side") if mode.startswith("fan-") else graph(f"{db}.side")
    mode = mode.removeprefix("fan-")
    policy = gx.CheckpointPolicy(durability="sync")
    async with gx.SQLiteStore(db) as store:
        if mode == "run":
            ex = gx.GraphExecutor(store=store, policy=policy, lease_ttl=0.5)
            # Fan mode: BACKOFF once a retry checkpoint was saved and branch good completed
            # (its output is in the latest retry checkpoint then, whatever the order).
            seen = {"retry": False, "good": g.name != "retry-fan"}
            async with ex.execute_stream(g, {}, trace_id=trace_id) as run:
                async for event in run:
                    if isinstance(event, gx.CheckpointSaved) and event.trigger == "retry":
                        seen["retry"] = True
                    if isinstance(event, gx.BranchCompleted) and event.branch == "good":
                        seen["good"] = True
                    if all(seen.values()):
                        print("BACKOFF", flush=True)
                        seen["retry"] = False
            return
        clock = FakeClock(start=time.time())
        ex = gx.GraphExecutor(store=store, policy=policy, clock=clock, lease_ttl=0.5)
        while True:
            try:
                async with ex.resume_from(g, trace_id) as run:
                    async for _event in run:
                        pass
                break
            except gx.RunLocked:
                await anyio.sleep(0.1)
        result = run.result
        print(
            "RESULT "
            + json.dumps({"status": result.status, "state": result.state, "sleeps": clock.sleeps}),
            flush=True,
        )


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
