"""Quickstart: a small support agent with a conditional route, parallel research and streamed
tokens from a (fake, deterministic) model. Prints the event stream as it arrives.

    python examples/quickstart.py
"""

from __future__ import annotations

import anyio

import graphexec as gx


class FakeModel:
    """A stand-in for an LLM: deterministic answers, streamed word by word."""

    def classify(self, ticket: str) -> str:
        return "refund" if "refund" in ticket.lower() or "money" in ticket.lower() else "question"

    async def stream(self, prompt: str):
        words = f"Thanks for reaching out. {prompt} We have processed your request.".split()
        for word in words:
            await anyio.sleep(0.01)  # the network, pretending
            yield word + " "


model = FakeModel()


async def classify(state):
    return {"intent": model.classify(state["ticket"]), "messages": ["classified the ticket"]}


async def lookup_orders(state):
    await anyio.sleep(0.05)
    return {"orders": [{"id": "A-1001", "total": 42.0, "status": "delivered"}]}


async def lookup_policy(state):
    await anyio.sleep(0.05)
    return {"policy": "Refunds within 30 days of delivery."}


def answer_question(state):  # a sync node: runs in a worker thread
    return {"reply": "Our opening hours are 9 to 5.", "messages": ["answered a question"]}


async def draft_reply(state, ctx: gx.NodeContext):
    order = state["orders"][0]
    prompt = f"Order {order['id']} ({order['total']:.2f} EUR) qualifies: {state['policy']}"
    words = []
    async for token in model.stream(prompt):
        words.append(token)
        await ctx.emit({"token": token})  # a Custom event per token
    ctx.report(token_cost=len(words))
    return {"reply": "".join(words).strip(), "messages": ["drafted a refund reply"]}


graph = (
    gx.GraphBuilder("support-agent")
    .node("classify", classify)
    .parallel("research", {"orders": lookup_orders, "policy": lookup_policy})
    .node("draft_reply", draft_reply)
    .node("answer_question", answer_question)
    .edge("classify", "research", when=lambda s: s["intent"] == "refund")
    .edge("classify", "answer_question")
    .edge("research", "draft_reply")
    .reducer("messages", gx.reducers.append)
    .start("classify")
    .end("draft_reply", "answer_question")
    .build()
)


_streaming = False


def show(event: gx.GraphEvent) -> None:
    """Print one event the way a UI log would."""
    global _streaming
    if _streaming and not isinstance(event, gx.Custom):
        print()
        _streaming = False
    match event:
        case gx.GraphStart(graph=name):
            print(f"▶ run {event.trace_id[:8]} of {name!r}")
        case gx.NodeStart(node=node, kind=kind):
            print(f"  • {node} ({kind}) started")
        case gx.ParallelStarted(branches=branches):
            print(f"    fan-out: {', '.join(branches)}")
        case gx.BranchCompleted(branch=branch, duration=d):
            print(f"    ✓ branch {branch} in {d * 1000:.0f} ms")
        case gx.Custom(data={"token": token}):
            print(token if _streaming else f"    {token}", end="", flush=True)
            _streaming = True
        case gx.StateChanged(key=key, delta=delta):
            text = repr(delta)
            print(f"    {key} ← {text[:60]}{'…' if len(text) > 60 else ''}")
        case gx.NodeEnd(node=node, duration=d, next_node=nxt):
            print(f"  • {node} done in {d * 1000:.1f} ms → {nxt or 'end'}")
        case gx.GraphComplete(steps=steps, duration=d):
            print(f"■ completed in {steps} steps, {d * 1000:.0f} ms")
        case gx.GraphFailed(error=error):
            print(f"✗ failed: {error.type}: {error.message}")
        case _:
            pass


async def main() -> None:
    executor = gx.GraphExecutor()
    for ticket in ("I want my money back for order A-1001", "When are you open?"):
        print(f"\nticket: {ticket!r}")
        async with executor.execute_stream(graph, {"ticket": ticket}) as run:
            async for event in run:
                show(event)
        print(f"reply: {run.result.state['reply']}")
        print(f"log:   {run.result.state['messages']}")


if __name__ == "__main__":
    anyio.run(main)
