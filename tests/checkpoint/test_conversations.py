"""Conversations: a completed trace takes its next turn (DESIGN "Threads: a conversation is
one trace"); a trace that is not finished refuses a new run with RunExists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

import graphexec as gx

from _resume_kit import Stores, leave_at_barrier  # isort: skip


async def reply(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"messages": [f"echo {state['messages'][-1]}"], "turns": 1}


async def listen(state: Mapping[str, Any]) -> None:
    return None


def chat(*, gate: bool = False) -> gx.Graph:
    """``listen -> reply`` (or ``listen -> gate (barrier) -> reply``)."""
    b = gx.GraphBuilder("chat").node("listen", listen).node("reply", reply)
    if gate:
        b.barrier("gate").edge("listen", "gate").edge("gate", "reply")
    else:
        b.edge("listen", "reply")
    return (
        b.reducer("messages", gx.reducers.append)
        .reducer("turns", gx.reducers.add)
        .start("listen")
        .end("reply")
        .build()
    )


class TestTurns:
    async def test_three_hundred_turns_on_one_trace(self, stores: Stores) -> None:
        """300 turns: each input goes through the reducers onto the last state; max_steps
        counts per turn (5 here, 600 steps in all); history and get_state cover every turn."""
        ex = stores.executor(max_steps=5)
        graph = chat()
        for i in range(1, 301):
            result = await ex.execute(graph, {"messages": [f"m{i}"]}, trace_id="conv")
            assert (result.status, result.turn, result.steps) == ("completed", i, 2 * i)
        assert result.state["turns"] == 300
        assert len(result.state["messages"]) == 600
        assert result.state["messages"][-2:] == ["m300", "echo m300"]
        assert len(result.execution_log) == 2  # this call's steps

        state = await ex.get_state("conv")
        assert (state.turn, state.step, state.status) == (300, 600, "completed")
        history = await ex.history("conv")
        assert [h.trigger for h in history[:4]] == ["start", "completion", "turn", "completion"]
        assert len(history) == 600
        first_turn = await ex.get_state("conv", seq=history[1].seq)
        assert (first_turn.turn, first_turn.state["messages"]) == (1, ["m1", "echo m1"])
        again = await stores.executor(await stores.reopen()).get_state("conv")
        assert again.state == state.state

    async def test_barrier_occurrences_keep_counting_across_turns(self, stores: Stores) -> None:
        """GraphStart carries the input and the turn; the barrier's ids go on: gate#1, #2, #3."""
        ex = stores.executor()
        graph = chat(gate=True)
        starts: list[gx.GraphStart] = []
        waited: list[str] = []
        for i in range(1, 4):
            async with ex.execute_stream(graph, {"messages": [f"m{i}"]}, trace_id="t") as run:
                async for event in run:
                    if isinstance(event, gx.GraphStart):
                        starts.append(event)
                    if isinstance(event, gx.BarrierWaiting):
                        waited.append(event.barrier_id)
                        await run.handle.approve(event.barrier_id)
            assert run.result.status == "completed"
        assert waited == ["gate#1", "gate#2", "gate#3"]
        assert [(s.turn, s.input, s.node, s.resumed, s.step) for s in starts] == [
            (1, {"messages": ["m1"]}, "listen", False, 0),
            (2, {"messages": ["m2"]}, "listen", False, 3),
            (3, {"messages": ["m3"]}, "listen", False, 6),
        ]

    async def test_a_decision_up_front_names_this_turns_occurrence(self, stores: Stores) -> None:
        """decisions= for a new turn is checked against the occurrences already resolved."""
        ex = stores.executor()
        graph = chat(gate=True)
        await ex.execute(
            graph, {"messages": ["a"]}, trace_id="t", decisions={"gate#1": gx.Approve()}
        )
        with pytest.raises(gx.InvalidDecision, match="already resolved"):
            await ex.execute(
                graph, {"messages": ["b"]}, trace_id="t", decisions={"gate#1": gx.Approve()}
            )
        result = await ex.execute(
            graph, {"messages": ["b"]}, trace_id="t", decisions={"gate#2": gx.Approve()}
        )
        assert (result.turn, result.state["messages"][-1]) == (2, "echo b")


class TestRunExists:
    async def test_a_waiting_trace_says_to_decide_its_barrier(self, stores: Stores) -> None:
        """A new run on a waiting trace is RunExists naming the status and the barrier."""
        ex = stores.executor()
        graph = chat(gate=True)
        await leave_at_barrier(ex, graph, "t-wait", {"messages": ["hi"]})
        with pytest.raises(gx.RunExists) as info:
            await ex.execute(graph, {"messages": ["again"]}, trace_id="t-wait", decisions={})
        assert info.value.status == "waiting"
        assert "gate#1" in str(info.value) and "resume_from" in str(info.value)
        # nothing changed, and the lease was given back: the run resumes
        async with ex.resume_from(graph, "t-wait") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    await run.handle.approve(event.barrier_id)
        assert run.result.state["messages"] == ["hi", "echo hi"]

    async def test_a_cancelled_trace_says_to_resume(self, stores: Stores) -> None:
        """A cancelled trace: RunExists saying resume_from."""
        ex = stores.executor()
        async with ex.execute_stream(chat(gate=True), {"messages": ["x"]}, trace_id="t-c") as run:
            async for event in run:
                if isinstance(event, gx.NodeStart) and event.node == "gate":
                    await run.handle.cancel()
        assert run.result.status == "cancelled"
        with pytest.raises(gx.RunExists, match="cancelled, not completed.*resume_from"):
            async with ex.execute_stream(chat(), {"messages": ["y"]}, trace_id="t-c"):
                pytest.fail("the trace is not finished")  # pragma: no cover

    async def test_a_bad_input_starts_no_turn(self, stores: Stores) -> None:
        """An input the reducers refuse raises at the call; the trace stays as it was."""
        ex = stores.executor()
        await ex.execute(chat(), {"messages": ["x"]}, trace_id="t-in")
        with pytest.raises(gx.StateError, match="turn 2"):
            await ex.execute(chat(), [1], trace_id="t-in")  # not a mapping of updates
        result = await ex.execute(chat(), {"messages": ["y"]}, trace_id="t-in")
        assert result.turn == 2
