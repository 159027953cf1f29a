"""gx.testing: the helpers users call in their own tests."""

from __future__ import annotations

from typing import Any

import graphexec as gx
from graphexec.typing import State


def _graph() -> gx.Graph:
    async def draft(state: State) -> dict[str, Any]:
        return {"draft": "hello"}

    async def send(state: State) -> dict[str, Any]:
        return {"sent": state["review"]["decision"] == "approve"}

    return (
        gx.GraphBuilder("t")
        .node("draft", draft)
        .barrier("review", prompt=lambda s: s["draft"])
        .node("send", send)
        .edge("draft", "review")
        .edge("review", "send")
        .start("draft")
        .end("send")
        .build()
    )


async def test_collect_runs_to_the_end_answering_barriers() -> None:
    """collect() returns every event and the result, answering each barrier with decide()."""
    prompts: list[Any] = []

    def decide(event: gx.BarrierWaiting) -> gx.Decision:
        prompts.append(event.prompt)
        return gx.Approve()

    events, result = await gx.testing.collect(gx.GraphExecutor(), _graph(), {}, decide=decide)
    assert ["hello"] == prompts
    assert result.state["sent"] is True
    assert isinstance(events[0], gx.GraphStart)
    assert isinstance(events[-1], gx.GraphComplete)


async def test_collect_accepts_an_async_decider() -> None:
    """decide may be a coroutine function."""

    async def decide(event: gx.BarrierWaiting) -> gx.Decision:
        return gx.Reject("no")

    _, result = await gx.testing.collect(gx.GraphExecutor(), _graph(), {}, decide=decide)
    assert {"decision": "reject", "reason": "no", "by": "human"} == result.state["review"]
    assert result.state["sent"] is False


async def test_without_timings_makes_runs_comparable() -> None:
    """Two runs of the same graph give equal event lists once timings are zeroed."""

    def decide(event: gx.BarrierWaiting) -> gx.Decision:
        return gx.Approve()

    ex = gx.GraphExecutor()
    first, _ = await gx.testing.collect(ex, _graph(), {}, trace_id="x", decide=decide)
    second, _ = await gx.testing.collect(ex, _graph(), {}, trace_id="x", decide=decide)
    assert gx.testing.without_timings(first) == gx.testing.without_timings(second)
    assert all(getattr(e, "duration", 0.0) == 0.0 for e in gx.testing.without_timings(first))
