"""The documentation's tutorial (docs/tutorial.md) as one script that runs, top to bottom.

    python examples/tutorial.py             # the four parts in order; writes .demo/tutorial.db

1. build a graph; 2. stream its events; 3. approve a barrier; 4. kill the process while a run
waits for approval (SIGKILL), then decide and resume it from another process.
The tutorial page shows this file's sections between ``--8<--`` markers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio

# --8<-- [start:build]
import graphexec as gx


async def classify(state):
    intent = "refund" if "refund" in state["ticket"].lower() else "question"
    return {"intent": intent, "log": [f"classified as {intent}"]}


async def answer(state, ctx: gx.NodeContext):
    reply = "We are open 9 to 5, Monday to Friday."
    for word in reply.split():
        await ctx.emit({"token": word + " "})  # a Custom event per token
    return {"reply": reply, "log": ["answered"]}


async def refund(state, ctx: gx.NodeContext):
    # A real payment API would get ctx.idempotency_key, so a re-run never pays twice.
    return {"reply": "Your refund is on its way.", "log": ["refunded"]}


async def decline(state):
    return {"reply": "We cannot refund this order.", "log": ["declined"]}


graph = (
    gx.GraphBuilder("support")
    .node("classify", classify)
    .node("answer", answer)
    .barrier("approve", prompt=lambda s: {"ticket": s["ticket"]}, timeout=7 * 24 * 3600)
    .node("refund", refund, side_effects=True)
    .node("decline", decline)
    .edge("classify", "approve", when=lambda s: s["intent"] == "refund")
    .edge("classify", "answer")
    .edge("approve", "refund", when=lambda s: s["approve"]["decision"] == "approve")
    .edge("approve", "decline")
    .reducer("log", gx.reducers.append)  # "log" accumulates; other keys are overwritten
    .start("classify")
    .end("answer", "refund", "decline")
    .build()
)
# --8<-- [end:build]


# --8<-- [start:stream]
async def stream_a_question() -> None:
    ex = gx.GraphExecutor()  # no store: nothing is persisted, everything else works
    async with ex.execute_stream(graph, {"ticket": "When are you open?"}) as run:
        async for event in run:
            match event:
                case gx.NodeStart(node=node):
                    print(f"[{node}]")
                case gx.Custom(data={"token": token}):
                    print(token, end="", flush=True)
                case gx.GraphComplete(state=state, steps=steps):
                    print(f"\ndone in {steps} steps: {state['log']}")


# --8<-- [end:stream]


# --8<-- [start:approve]
async def approve_a_refund() -> None:
    ex = gx.GraphExecutor()
    async with ex.execute_stream(graph, {"ticket": "Refund order 42"}) as run:
        async for event in run:
            if isinstance(event, gx.BarrierWaiting):
                print(f"waiting at {event.barrier_id}: {event.prompt}")
                await run.handle.approve(event.barrier_id)  # or .reject(id, reason)
    print(run.result.status, run.result.state["reply"])  # completed Your refund is on its way.


# --8<-- [end:approve]


DB = Path(".demo/tutorial.db")


# --8<-- [start:crash-child]
async def start_and_wait(db: str, trace_id: str) -> None:
    """Run a refund ticket until its approval waits (checkpointed), then keep waiting."""
    # A short lease: a dead owner on another host is taken over after it (default 30 s); on
    # this host a dead owner is taken over at once, and a waiting run holds no lease.
    ex = gx.GraphExecutor(store=gx.SQLiteStore(db), lease_ttl=2.0)
    async with ex.execute_stream(graph, {"ticket": "Refund order 7"}, trace_id=trace_id) as run:
        async for event in run:
            if isinstance(event, gx.BarrierWaiting):
                print("waiting", flush=True)  # the parent kills us here


# --8<-- [end:crash-child]


# --8<-- [start:crash-resume]
async def decide_and_resume(db: str, trace_id: str) -> None:
    store = gx.SQLiteStore(db)
    ex = gx.GraphExecutor(store=store)
    state = await ex.get_state(trace_id)  # what the dead process checkpointed
    print(f"found {trace_id}: {state.status} at {state.pending_barrier.barrier_id}")
    # A decision from any process goes to the run's inbox in the store.
    await store.submit_decision(trace_id, state.pending_barrier.barrier_id, gx.Approve())
    while True:
        try:
            async with ex.resume_from(graph, trace_id) as run:
                async for event in run:
                    if isinstance(event, gx.BarrierResolved):
                        print(f"{event.barrier_id}: {event.decision}")
            break
        except gx.RunLocked as exc:  # a live process drives the run: wait for its lease
            await anyio.sleep(max(0.1, (exc.expires_at or 0) - time.time()))
    print(run.result.status, run.result.state["log"])
    await store.aclose()


# --8<-- [end:crash-resume]


def crash_and_resume() -> None:
    DB.parent.mkdir(exist_ok=True)
    trace_id = f"ticket-{os.getpid()}"
    # --8<-- [start:crash-kill]
    child = subprocess.Popen(
        [sys.executable, __file__, "child", str(DB), trace_id], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "waiting"
    child.send_signal(signal.SIGKILL)  # no cleanup, no final checkpoint: a crash
    child.wait()
    anyio.run(decide_and_resume, str(DB), trace_id)
    # --8<-- [end:crash-kill]


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        anyio.run(start_and_wait, sys.argv[2], sys.argv[3])
    else:
        print("-- 2. stream events")
        anyio.run(stream_a_question)
        print("-- 3. approve a barrier")
        anyio.run(approve_a_refund)
        print("-- 4. resume after a crash")
        crash_and_resume()
