"""Concepts: conversations, one trace per chat (docs/concepts/conversations.md shows this file)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

import graphexec as gx


# --8<-- [start:graph]
async def reply(state: Mapping[str, Any]) -> dict[str, Any]:
    last = state["messages"][-1]
    return {"messages": [f"bot: you said {last!r} ({len(state['messages'])} messages so far)"]}


async def send(state: Mapping[str, Any]) -> None:
    return None


graph = (
    gx.GraphBuilder("chat")
    .reducer("messages", gx.reducers.append)  # a turn's input is appended, not overwritten
    .node("reply", reply)
    .barrier("approve")  # every answer is approved before it is sent
    .node("send", send)
    .edge("reply", "approve")
    .edge("approve", "send")
    .start("reply")
    .end("send")
    .build()
)
# --8<-- [end:graph]


async def main() -> None:
    ex = gx.GraphExecutor(store=gx.SQLiteStore("chat.db"))
    # --8<-- [start:turns]
    first = await ex.execute(
        graph, {"messages": ["hi"]}, trace_id="chat-7", decisions={"approve": gx.Approve()}
    )
    print(first.turn, first.state["messages"])

    # The same trace id again: the next turn of the conversation, on the last state.
    second = await ex.execute(
        graph, {"messages": ["refund me"]}, trace_id="chat-7", decisions={"approve": gx.Approve()}
    )
    print(second.turn, second.state["messages"][-1])
    # --8<-- [end:turns]
    assert second.turn == 2

    # --8<-- [start:occurrences]
    async with ex.execute_stream(graph, {"messages": ["and?"]}, trace_id="chat-7") as run:
        async for event in run:
            if isinstance(event, gx.BarrierWaiting):
                print("turn 3 waits at", event.barrier_id)  # occurrences keep counting
                break  # the run is checkpointed as "waiting"

    try:
        async with ex.execute_stream(graph, {"messages": ["hello?"]}, trace_id="chat-7"):
            pass
    except gx.RunExists as exc:  # the turn before has not finished: decide it, resume it
        print("RunExists:", exc.status)
    # --8<-- [end:occurrences]

    # --8<-- [start:history]
    for summary in await ex.history("chat-7"):
        print(summary.seq, summary.step, summary.trigger)
    # --8<-- [end:history]


anyio.run(main)
