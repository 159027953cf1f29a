"""Leases: one process drives a trace at a time; renewal, expiry, release.

Store-independent behaviour runs on MemoryStore and SQLiteStore (the ``stores`` fixture in
conftest.py); "another process" is a second SQLiteStore on the same file (MemoryStore: the same
object), and "a restart" closes the SQLiteStore and opens a new one on the same path. Shared
graphs and helpers: ``_resume_kit.py``.
"""

from __future__ import annotations

import time

import anyio
import pytest

import graphexec as gx
from graphexec.checkpoint._record import (
    Lease,
)

from _resume_kit import (  # isort: skip
    Stores,
    chain,
    approval,
    consume,
    leave_at_barrier,
)


class TestLeases:
    """Only one driver per trace."""

    async def test_a_waiting_run_holds_no_lease(self, stores: Stores) -> None:
        """While a barrier waits, another driver may resume the run and finish it; the first
        one, once it stops, writes nothing over it (its lease was given up, then taken)."""
        graph = approval()
        ex1 = stores.executor()
        ex2 = stores.executor(stores.other())
        async with ex1.execute_stream(graph, trace_id="t-lock") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    info = await ex2.store.get_run("t-lock")  # type: ignore[union-attr]
                    assert info is not None and info.lease is None
                    async with ex2.resume_from(graph, "t-lock") as other:
                        await consume(other)
                    assert other.result.status == "completed"
                    break
        before = await ex2.history("t-lock")
        assert before[-1].status == "completed"
        assert await ex1.history("t-lock") == before  # the first driver wrote nothing more
        state = await ex1.get_state("t-lock")
        assert (state.status, state.state["sent"]) == ("completed", True)

    async def test_lease_is_kept_while_a_long_node_runs(self, stores: Stores) -> None:
        """A node running longer than lease_ttl keeps the lease: another driver stays out."""
        graph = chain(delays={"b": 1.0})
        ex = stores.executor(lease_ttl=0.3)
        other = stores.executor(stores.other())
        async with ex.execute_stream(graph, trace_id="t-long") as run:
            async for event in run:
                if isinstance(event, gx.NodeStart) and event.node == "b":
                    await anyio.sleep(0.7)  # well past the ttl of the lease taken at the start
                    with pytest.raises(gx.RunLocked):
                        async with other.resume_from(graph, "t-long"):
                            pytest.fail("the lease should have been renewed")  # pragma: no cover
        assert run.result.status == "completed"
        assert run.result.state == {"log": ["a", "b", "c"]}

    async def test_vanished_driver_blocks_resume_until_its_lease_expires(
        self, stores: Stores
    ) -> None:
        """A lease never released (the process died) blocks resume_from until its ttl passes."""
        graph = approval()
        ex = stores.executor()
        await leave_at_barrier(ex, graph, "t-ghost")
        t0 = time.time()
        await stores.other().acquire_lease("t-ghost", Lease("vanished-process", 0.5))
        with pytest.raises(gx.RunLocked) as locked:
            async with ex.resume_from(graph, "t-ghost"):
                pytest.fail("the lease is held")  # pragma: no cover
        expires_at = locked.value.expires_at
        assert expires_at is not None
        assert t0 < expires_at <= time.time() + 0.5

        while True:
            try:
                async with ex.resume_from(graph, "t-ghost") as resumed:
                    await consume(resumed)
                break
            except gx.RunLocked:
                assert time.time() < t0 + 5, "the lease never expired"
                await anyio.sleep(0.05)
        assert time.time() >= expires_at
        assert resumed.result.state["sent"] is True
