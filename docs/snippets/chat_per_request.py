"""How-to: serve a chat UI, one request driving the run (docs/how-to/chat-ui.md).

The functions are what a web framework's handlers call; main() plays the page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import msgspec

import graphexec as gx


async def answer(state: Mapping[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
    words = ["Refund", state["message"].split()[-1], "?"]
    for word in words:  # a fake model streaming tokens
        await ctx.emit({"token": word})
    return {"reply": " ".join(words)}


async def refund(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"refunded": True}


graph = (
    gx.GraphBuilder("chat")
    .node("answer", answer)
    .barrier("approve", prompt=lambda s: {"question": s["reply"]})
    .node("refund", refund, side_effects=True)
    .edge("answer", "approve")
    .edge("approve", "refund")
    .start("answer")
    .end("refund")
    .build()
)

# --8<-- [start:stream]
store = gx.SQLiteStore("chat.db")
ex = gx.GraphExecutor(store=store)


async def sse_frames(trace_id: str, message: str) -> AsyncIterator[bytes]:
    """An async iterator of SSE frames for one user message (hand it to your framework)."""
    async with ex.execute_stream(graph, {"message": message}, trace_id=trace_id) as run:
        async for event in run:
            yield b"data: " + msgspec.json.encode(event) + b"\n\n"
            if isinstance(event, gx.BarrierWaiting):
                break  # the run is checkpointed as "waiting"; the page shows an approval card


# --8<-- [end:stream]


# --8<-- [start:decide]
async def decide_and_continue(trace_id: str, barrier_id: str, body: bytes) -> AsyncIterator[bytes]:
    decision = msgspec.json.decode(body, type=gx.Decision)  # {"type": "approve"}, ...
    await store.submit_decision(trace_id, barrier_id, decision)  # checked at once
    async with ex.resume_from(graph, trace_id) as run:  # resolves the barrier
        async for event in run:
            yield b"data: " + msgspec.json.encode(event) + b"\n\n"


# --8<-- [end:decide]


async def main() -> None:
    frames = [f async for f in sse_frames("conv-1", "refund order A-17")]
    print(len(frames), "frames, the last:", msgspec.json.decode(frames[-1][6:])["type"])

    # --8<-- [start:reconnect]
    state = await ex.get_state("conv-1")  # the page reloads: the store is the truth
    if state.status == "waiting" and state.pending_barrier is not None:
        card = {"barrier_id": state.pending_barrier.barrier_id, **state.pending_barrier.prompt}
        print("card:", card)
    # --8<-- [end:reconnect]

    async for frame in decide_and_continue("conv-1", "approve#1", b'{"type": "approve"}'):
        last = msgspec.json.decode(frame[6:])
    print(last["type"], last["state"]["refunded"])


anyio.run(main)
