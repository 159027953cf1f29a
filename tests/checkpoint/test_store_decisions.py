"""Decisions submitted through the store (another process) reaching a waiting run.

Store-independent behaviour runs on MemoryStore and SQLiteStore (the ``stores`` fixture in
conftest.py); "another process" is a second SQLiteStore on the same file (MemoryStore: the same
object), and "a restart" closes the SQLiteStore and opens a new one on the same path. Shared
graphs and helpers: ``_resume_kit.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

import graphexec as gx

from _resume_kit import (  # isort: skip
    Stores,
    approval,
    loop,
    APPROVED,
    consume,
    leave_at_barrier,
)


class TestStoreDecisions:
    """store.submit_decision: decisions from another process."""

    async def test_reaches_a_waiting_run_by_polling(self, stores: Stores) -> None:
        """A decision submitted through the store is picked up by the run waiting for it."""
        ex = stores.executor(decision_poll_interval=0.02)
        other = stores.other()
        events: list[gx.GraphEvent] = []
        async with ex.execute_stream(approval(), trace_id="t-poll") as run:
            async for event in run:
                events.append(event)
                if isinstance(event, gx.BarrierWaiting):
                    assert (
                        await other.submit_decision("t-poll", event.barrier_id, gx.Approve()) >= 1
                    )
        resolved = [e for e in events if isinstance(e, gx.BarrierResolved)]
        assert [(e.barrier_id, e.decision, e.by) for e in resolved] == [
            ("approve#1", "approve", "human")
        ]
        assert run.result.state == {"draft": "hello", "approve": APPROVED, "sent": True}

    @pytest.mark.parametrize(
        ("decision", "record", "sent"),
        [
            (gx.Approve(), APPROVED, True),
            (
                gx.Reject("too risky"),
                {"decision": "reject", "reason": "too risky", "by": "human"},
                False,
            ),
        ],
    )
    async def test_is_used_by_a_later_resume(
        self, stores: Stores, decision: gx.Decision, record: dict[str, Any], sent: bool
    ) -> None:
        """A decision submitted while nobody drives the run is used when it is resumed."""
        graph = approval()
        await leave_at_barrier(stores.executor(), graph, "t-later")
        store = await stores.reopen()
        await store.submit_decision("t-later", "approve#1", decision)
        async with stores.executor(store).resume_from(graph, "t-later") as resumed:
            events = await consume(resumed, approve=False)
        assert not [e for e in events if isinstance(e, gx.BarrierWaiting)]
        assert resumed.result.state == {"draft": "hello", "approve": record, "sent": sent}

    async def test_refused_targets(self, stores: Stores) -> None:
        """Unknown trace, resolved barrier, non-barrier node, finished run: refused at the call."""
        graph = loop(rounds=2)
        ex = stores.executor()
        async with ex.execute_stream(graph, {"count": 0}, trace_id="t-ref") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    if event.barrier_id == "gate#2":
                        break
                    await run.handle.approve(event.barrier_id)
        assert run.result.status == "waiting"
        store = stores.other()
        with pytest.raises(gx.RunNotFound):
            await store.submit_decision("nope", "gate#1", gx.Approve())
        with pytest.raises(gx.InvalidDecision, match="already resolved"):
            await store.submit_decision("t-ref", "gate#1", gx.Approve())
        with pytest.raises(gx.InvalidDecision, match="not a barrier"):
            await store.submit_decision("t-ref", "work#1", gx.Approve())
        await store.submit_decision("t-ref", "gate#2", gx.Approve())
        async with ex.resume_from(graph, "t-ref") as resumed:
            events = await consume(resumed, approve=False)
        assert not [e for e in events if isinstance(e, gx.BarrierWaiting)]
        assert resumed.result.state == {"count": 2, "gate": APPROVED, "done": True}
        with pytest.raises(gx.RunFinished):
            await store.submit_decision("t-ref", "gate#3", gx.Approve())


# -- checkpoint policy ------------------------------------------------------------------------
