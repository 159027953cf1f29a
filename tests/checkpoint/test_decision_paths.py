"""One set of decision checks on every path, and nothing in the store can fail a run.

The four failures of issue 9 are tests here: a dict or a string stored as a decision; an Edit
the typed state refuses, sent through the store; a bare node name through the store taken for a
wildcard; a second decision for one occurrence silently dropped. Rows already in a store that a
run cannot use (written by an older graphexec or by hand) are skipped and reported.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

import graphexec as gx

from _resume_kit import (  # isort: skip
    APPROVED,
    Stores,
    approval,
    consume,
    leave_at_barrier,
    loop,
)


class Ticket(msgspec.Struct):
    """Typed state for the Edit tests."""

    draft: str = ""
    amount: int = 0
    approve: dict[str, Any] | None = None
    sent: bool = False


def typed_approval() -> gx.Graph:
    """``draft -> approve (barrier) -> send`` on typed state (amount: int)."""

    async def draft(state: Ticket) -> dict[str, Any]:
        return {"draft": "refund", "amount": 5}

    async def send(state: Ticket) -> dict[str, Any]:
        return {"sent": True}

    return (
        gx.GraphBuilder("typed-approval", state=Ticket)
        .node("draft", draft)
        .barrier("approve")
        .node("send", send)
        .edge("draft", "approve")
        .edge("approve", "send")
        .start("draft")
        .end("send")
        .build()
    )


async def watch_until_observed(
    ex: gx.GraphExecutor, graph: gx.Graph, trace_id: str, submit: Any, then: Any
) -> tuple[list[gx.GraphEvent], gx.Run]:
    """Resume a waiting run; once it waits, ``submit()``; at the first ObservedError,
    ``then()``; stream to the end."""
    events: list[gx.GraphEvent] = []
    async with ex.resume_from(graph, trace_id) as run:
        async for event in run:
            events.append(event)
            if isinstance(event, gx.BarrierWaiting):
                await submit()
            if isinstance(event, gx.ObservedError):
                await then()
    return events, run


class TestStoreRefusesBadDecisions:
    """submit_decision refuses at the call what no run could use; nothing is stored."""

    @pytest.mark.parametrize("bad", [{"decision": "approve"}, "approve", None, 1])
    async def test_a_value_that_is_not_a_decision(self, stores: Stores, bad: Any) -> None:
        """A dict or a string is InvalidDecision naming the wire form; the run resumes fine."""
        ex = stores.executor()
        await leave_at_barrier(ex, approval(), "t-bad")
        other = stores.other()
        with pytest.raises(gx.InvalidDecision, match="is not a decision") as info:
            await other.submit_decision("t-bad", "approve#1", bad)
        assert '{"type": "approve"}' in str(info.value)
        assert await other.decisions_after("t-bad", 0) == []
        await other.submit_decision("t-bad", "approve#1", gx.Approve())
        async with ex.resume_from(approval(), "t-bad") as run:
            await consume(run, approve=False)
        assert run.result.status == "completed"
        assert run.result.state["approve"] == APPROVED

    async def test_a_bare_node_name_is_refused_unless_every_occurrence(
        self, stores: Stores
    ) -> None:
        """A bare node name is not a wildcard; every_occurrence=True makes it one."""
        ex = stores.executor(decision_poll_interval=0.02)
        await leave_at_barrier(ex, loop(rounds=3), "t-bare")
        other = stores.other()
        with pytest.raises(gx.InvalidDecision, match="not a barrier id") as info:
            await other.submit_decision("t-bare", "gate", gx.Approve())
        assert "every_occurrence=True" in str(info.value)
        assert await other.decisions_after("t-bare", 0) == []
        with pytest.raises(gx.InvalidDecision, match="takes a barrier node name"):
            await other.submit_decision("t-bare", "gate#1", gx.Approve(), every_occurrence=True)

        await other.submit_decision("t-bare", "gate", gx.Approve(), every_occurrence=True)
        async with ex.resume_from(loop(rounds=3), "t-bare") as run:
            events = await consume(run, approve=False)
        assert run.result.status == "completed"
        resolved = [e.barrier_id for e in events if isinstance(e, gx.BarrierResolved)]
        assert resolved == ["gate#1", "gate#2", "gate#3"]

    async def test_a_second_decision_for_one_occurrence_is_refused(self, stores: Stores) -> None:
        """The first decision stands; the second is InvalidDecision, not silently dropped."""
        ex = stores.executor()
        await leave_at_barrier(ex, approval(), "t-twice")
        other = stores.other()
        await other.submit_decision("t-twice", "approve#1", gx.Reject("first"))
        with pytest.raises(gx.InvalidDecision, match="already has a decision"):
            await other.submit_decision("t-twice", "approve#1", gx.Approve())
        assert [d.decision for d in await other.decisions_after("t-twice", 0)] == [
            gx.Reject("first")
        ]
        async with ex.resume_from(approval(), "t-twice") as run:
            await consume(run, approve=False)
        assert run.result.state["approve"]["reason"] == "first"

    async def test_the_handle_refuses_a_second_decision_too(self, stores: Stores) -> None:
        """The same rule through a handle: the second decision for an occurrence raises."""
        ex = stores.executor()

        async def twice(run: gx.Run, event: gx.BarrierWaiting) -> None:
            await run.handle.reject("approve#2", "later")
            with pytest.raises(gx.InvalidDecision, match="already has a decision"):
                await run.handle.approve("approve#2")
            with pytest.raises(gx.InvalidDecision, match="not a barrier id"):
                await run.handle.approve("approve")

        await leave_at_barrier(ex, approval(), "t-handle", before_leaving=twice)

    async def test_execute_takes_bare_names_given_up_front(self, stores: Stores) -> None:
        """decisions= given up front may name a barrier node (every occurrence)."""
        ex = stores.executor()
        result = await ex.execute(loop(rounds=2), trace_id="t-up", decisions={"gate": gx.Approve()})
        assert result.status == "completed"
        with pytest.raises(gx.InvalidDecision, match="is not a decision"):
            await ex.execute(loop(), trace_id="t-up2", decisions={"gate": "approve"})  # type: ignore[dict-item]  # on purpose


class TestNothingStoredFailsARun:
    """A stored decision the run cannot use is skipped and reported; the run keeps waiting."""

    async def test_an_edit_the_typed_state_refuses(self, stores: Stores) -> None:
        """Through the store, an Edit with a wrong type is skipped (ObservedError, log line),
        the occurrence is not used up, and a corrected Edit then resolves it."""
        graph = typed_approval()
        ex = stores.executor(decision_poll_interval=0.02)
        await leave_at_barrier(ex, graph, "t-edit")
        other = stores.other()

        async def submit_bad() -> None:
            await other.submit_decision("t-edit", "approve#1", gx.Edit({"amount": "lots"}))

        async def submit_good() -> None:
            await other.submit_decision("t-edit", "approve#1", gx.Edit({"amount": 7}))

        with capture_logs() as logs:
            events, run = await watch_until_observed(ex, graph, "t-edit", submit_bad, submit_good)
        assert run.result.status == "completed"
        assert run.result.state.amount == 7
        observed = [e for e in events if isinstance(e, gx.ObservedError)]
        assert len(observed) == 1
        assert observed[0].node == "approve"
        assert observed[0].error.type == "InvalidDecision"
        assert "amount" in observed[0].error.message
        resolved = [e for e in events if isinstance(e, gx.BarrierResolved)]
        assert [(e.barrier_id, e.edited) for e in resolved] == [("approve#1", True)]
        skipped = [line for line in logs if line["event"] == "skipped a stored decision"]
        assert [line["barrier_id"] for line in skipped] == ["approve#1"]

    async def test_an_edit_for_a_run_that_is_not_live(self, stores: Stores) -> None:
        """A bad Edit waiting in the store when the run resumes is skipped the same way."""
        graph = typed_approval()
        ex = stores.executor(decision_poll_interval=0.02)
        await leave_at_barrier(ex, graph, "t-edit2")
        other = stores.other()
        await other.submit_decision("t-edit2", "approve#1", gx.Edit({"amount": "lots"}))
        events: list[gx.GraphEvent] = []
        async with ex.resume_from(graph, "t-edit2") as run:
            async for event in run:
                events.append(event)
                if isinstance(event, gx.BarrierWaiting):
                    break
        assert run.result.status == "waiting"
        assert [type(e).__name__ for e in events if isinstance(e, gx.ObservedError)] == [
            "ObservedError"
        ]
        state = await ex.get_state("t-edit2")
        assert state.pending_barrier is not None
        assert state.pending_barrier.barrier_id == "approve#1"


class TestRowsWrittenBehindTheStoresBack:
    """Rows from an older graphexec, or written by hand, never fail a run (SQLite)."""

    async def test_undecodable_and_bare_rows_are_skipped(self, stores: Stores) -> None:
        """A msgpack dict, a string and a bare node name in the inbox: each skipped and
        reported; the run goes on waiting and takes the next good decision."""
        if stores.kind != "sqlite":
            pytest.skip("rows written by hand into the SQLite file")
        ex = stores.executor(decision_poll_interval=0.02)
        await leave_at_barrier(ex, approval(), "t-rows")
        db = sqlite3.connect(stores.path)
        with db:
            for barrier_id, blob in [
                ("approve#1", msgspec.msgpack.encode({"decision": "approve"})),
                ("approve#1", msgspec.msgpack.encode("approve")),
                ("approve", msgspec.msgpack.encode(gx.Approve())),
            ]:
                db.execute(
                    "INSERT INTO decisions (trace_id, barrier_id, decision, created_at) "
                    "VALUES (?, ?, ?, 0)",
                    ("t-rows", barrier_id, blob),
                )
        db.close()
        other = stores.other()
        events: list[gx.GraphEvent] = []
        with capture_logs() as logs:
            async with ex.resume_from(approval(), "t-rows") as run:
                async for event in run:
                    events.append(event)
                    if isinstance(event, gx.BarrierWaiting):
                        await other.submit_decision("t-rows", "approve#1", gx.Reject("by hand"))
        assert run.result.status == "completed"
        assert run.result.state["approve"]["reason"] == "by hand"
        observed = [e.error.message for e in events if isinstance(e, gx.ObservedError)]
        assert len(observed) == 3
        assert "cannot be read" in observed[0] and "cannot be read" in observed[1]
        assert "bare node name" in observed[2]
        assert len([x for x in logs if x["event"] == "skipped a stored decision"]) == 3

    async def test_a_version_1_file_migrates_with_its_inbox(self, stores: Stores) -> None:
        """A file at schema version 1 (before refused decisions) opens, migrates, and its
        inbox rows are read as before."""
        if stores.kind != "sqlite":
            pytest.skip("schema migration")
        from graphexec.checkpoint import _sqlite

        path = stores.path.with_name("v1.db")
        first = _sqlite._migrations()[0]
        db = sqlite3.connect(path)
        for statement in _sqlite._statements(first[2]):
            db.execute(statement)
        db.execute("PRAGMA user_version = 1")
        db.execute(
            "INSERT INTO decisions (trace_id, barrier_id, decision, created_at) VALUES (?,?,?,0)",
            ("t-old", "approve#1", msgspec.msgpack.encode(gx.Approve())),
        )
        db.commit()
        db.close()
        async with gx.SQLiteStore(path) as store:
            found = await store.decisions_after("t-old", 0)
            assert [(d.barrier_id, d.decision, d.error) for d in found] == [
                ("approve#1", gx.Approve(), None)
            ]
            await store.refuse_decision("t-old", found[0].id, "test")
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA user_version").fetchone()[0] == _sqlite._migrations()[-1][0]
        assert db.execute("SELECT refused FROM decisions").fetchall() == [("test",)]
        db.close()
