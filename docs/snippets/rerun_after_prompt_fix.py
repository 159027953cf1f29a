"""How-to: re-run from a node after fixing a prompt (docs/how-to/rerun.md shows this file)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

import graphexec as gx

calls: list[str] = []


# --8<-- [start:graph]
async def retrieve(state: Mapping[str, Any]) -> dict[str, Any]:
    calls.append("retrieve")  # slow and costly: we do not want to pay for it twice
    return {"documents": [f"doc about {state['topic']}"]}


def make_graph(prompt: str) -> gx.Graph:
    async def draft(state: Mapping[str, Any]) -> dict[str, Any]:
        calls.append("draft")
        return {"draft": prompt.format(topic=state["topic"], n=len(state["documents"]))}

    async def publish(state: Mapping[str, Any]) -> dict[str, Any]:
        calls.append("publish")
        return {"post": state["draft"].upper()}

    return (
        gx.GraphBuilder("blog", fingerprint="auto")  # every node gets a code fingerprint
        .node("retrieve", retrieve)
        .node("draft", draft)
        .node("publish", publish)
        .edge("retrieve", "draft")
        .edge("draft", "publish")
        .start("retrieve")
        .end("publish")
        .build()
    )


graph_v1 = make_graph("Write about {topic}.")
# --8<-- [end:graph]


async def main() -> None:
    ex = gx.GraphExecutor(store=gx.SQLiteStore("blog.db"))
    await ex.execute(graph_v1, {"topic": "otters"}, trace_id="post-1")
    assert calls == ["retrieve", "draft", "publish"]
    calls.clear()

    # --8<-- [start:plan]
    # The prompt was wrong. Fix it: the node's closure changed, so its fingerprint did too.
    graph_v2 = make_graph("Write about {topic}, citing {n} sources.")

    plan = await ex.plan_rerun(graph_v2, "post-1", "draft")
    for row in plan.rows:
        reasons = ", ".join(str(r) for r in row.reasons)
        print(f"{row.node}@{row.step}: {row.action} {reasons}")
    # --8<-- [end:plan]

    # --8<-- [start:rerun]
    async with ex.rerun(graph_v2, "post-1", "draft", plan=plan, new_trace_id="post-1b") as run:
        async for _event in run:
            pass
    result = run.result
    print(result.status, result.reused, "reused:", result.state["post"])
    info = (await ex.runs())[0]
    print(info.trace_id, "is a re-run of", info.rerun_of)
    # --8<-- [end:rerun]
    assert calls == ["draft", "publish"]
    assert result.reused == 1
    calls.clear()

    # --8<-- [start:update]
    # Or keep the code and change an input of the target: `update` is applied just before it.
    async with ex.rerun(graph_v2, "post-1b", "draft", update={"topic": "sea otters"}) as run:
        async for _event in run:
            pass
    print(run.result.state["post"])
    # --8<-- [end:update]
    assert calls == ["draft", "publish"]


anyio.run(main)
