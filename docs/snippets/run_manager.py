"""How-to: serve a chat UI with the run manager (docs/how-to/chat-ui.md shows this file).

The functions below are what a web framework's handlers call; main() plays the page: it starts
a run, follows its events, drops the connection, reconnects with the last event id it saw, and
approves from "another request".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import msgspec

import graphexec as gx


async def answer(state: Mapping[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
    words = ["Refunding", "order", state["order"], "now."]
    for word in words:  # a fake model streaming tokens
        await ctx.emit({"token": word})
    return {"reply": " ".join(words)}


async def refund(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"refunded": state["order"]}


graph = (
    gx.GraphBuilder("chat")
    .node("answer", answer)
    .barrier("approve", prompt=lambda s: {"refund": s["order"]})
    .node("refund", refund, side_effects=True)
    .edge("answer", "approve")
    .edge("approve", "refund")
    .start("answer")
    .end("refund")
    .build()
)

# --8<-- [start:server]
store = gx.SQLiteStore("chat.db")
ex = gx.GraphExecutor(store=store, graphs=[graph])  # graphs=: recover() finds a run's graph


async def start_run(message: Mapping[str, Any]) -> str:  # POST /runs
    return await ex.start(graph, dict(message))  # the trace id, once it is in the store


async def sse_frames(trace_id: str, last_event_id: str | None) -> AsyncIterator[bytes]:
    """GET /runs/{trace_id}/events: hand this to the framework's streaming response."""
    after = int(last_event_id) if last_event_id else None  # the Last-Event-ID header
    async for event in ex.events(trace_id, after=after):
        yield b"id: %d\ndata: %s\n\n" % (event.event_id, msgspec.json.encode(event))


class DecisionRequest(msgspec.Struct):
    barrier_id: str
    decision: gx.Decision  # {"type": "approve"}, {"type": "reject", "reason": ...}, ...


async def decide(trace_id: str, body: bytes) -> None:  # POST /runs/{trace_id}/decisions
    request = msgspec.json.decode(body, type=DecisionRequest)  # a bad body: ValidationError
    await ex.decide(trace_id, request.barrier_id, request.decision)  # live run, or the store


async def cancel(trace_id: str) -> None:  # POST /runs/{trace_id}/cancel
    await ex.cancel(trace_id)


# --8<-- [end:server]


def frame_fields(frame: bytes) -> tuple[str, dict[str, Any]]:
    """What the page's EventSource sees: the id, and the event's JSON; printed as a line."""
    id_line, data_line = frame.decode().strip().split("\n")
    event_id = id_line.removeprefix("id: ")
    event = msgspec.json.decode(data_line.removeprefix("data: "))
    token = event.get("data", {}).get("token") if event["type"] == "Custom" else None
    print(event_id, event["type"], *([token] if token else []))
    return event_id, event


async def main() -> None:
    # --8<-- [start:lifespan]
    async with ex:  # the app's lifespan: runs started here live in the executor's task group
        await ex.recover()  # what a previous server left: interrupted, orphaned, decided
        # ... serve requests ...
        # --8<-- [end:lifespan]
        trace_id = await start_run({"order": "A-17"})

        last_id: str | None = None
        async for frame in sse_frames(trace_id, None):  # the page's first connection
            last_id, event = frame_fields(frame)
            if event["type"] == "Custom" and event["data"]["token"] == "order":
                break  # the connection drops in the middle of the tokens

        barrier_id = ""
        print("(the page reconnects with Last-Event-ID:", last_id, end=")\n")
        async for frame in sse_frames(trace_id, last_id):  # reconnect: nothing lost, no repeat
            last_id, event = frame_fields(frame)
            if event["type"] == "BarrierWaiting":
                barrier_id = event["barrier_id"]
                break  # the page shows an approval card

        # The human clicks Approve: another request, maybe served by another process.
        body = msgspec.json.encode({"barrier_id": barrier_id, "decision": {"type": "approve"}})
        await decide(trace_id, body)
        print("(approved; the page follows the run again)")
        async for frame in sse_frames(trace_id, last_id):
            last_id, event = frame_fields(frame)
        state = await ex.get_state(trace_id)
        print(state.status, state.state["refunded"])


anyio.run(main)
