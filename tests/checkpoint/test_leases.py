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

    async def test_second_driver_is_locked_out_until_the_first_leaves(self, stores: Stores) -> None:
        """A resume while another driver holds the run is RunLocked; after it leaves, it works."""
        graph = approval()
        ex1 = stores.executor()
        ex2 = stores.executor(stores.other())
        async with ex1.execute_stream(graph, trace_id="t-lock") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    with pytest.raises(gx.RunLocked) as locked:
                        async with ex2.resume_from(graph, "t-lock"):
                            pytest.fail("the lease is held")  # pragma: no cover
                    assert locked.value.trace_id == "t-lock"
                    assert locked.value.expires_at is not None
                    assert locked.value.expires_at > time.time()
                    break
        assert run.result.status == "waiting"

        async with ex2.resume_from(graph, "t-lock") as resumed:
            events = await consume(resumed)
        assert [e.barrier_id for e in events if isinstance(e, gx.BarrierWaiting)] == ["approve#1"]
        assert resumed.result.state["sent"] is True

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
