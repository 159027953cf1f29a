"""The CheckpointStore contract: one suite, run against every store (see conftest.store)."""

from __future__ import annotations

import sys
import uuid
import zlib
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphexec as gx
from graphexec._decisions import Approve, Decision, Edit, Reject
from graphexec._directives import StateDelta
from graphexec.checkpoint import CheckpointStore, RunInfo, SQLiteStore, StoredCheckpoint
from graphexec.checkpoint._hints import WORK
from graphexec.checkpoint._leases import _start_time, this_process
from graphexec.checkpoint._record import (
    CheckpointBody,
    CheckpointKind,
    CheckpointSummary,
    Lease,
    ParentRef,
    StepRecord,
    decode_body,
    decode_snapshot,
    encode_body,
    encode_snapshot,
    now,
)
from graphexec.exceptions import (
    CheckpointError,
    InvalidDecision,
    LeaseLost,
    RunFinished,
    RunLocked,
    RunNotFound,
)

T0 = 1_700_000_000.0


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every store, on both anyio backends (the checkpoint folder's default is asyncio only)."""
    return str(request.param)


def make_row(
    trace_id: str,
    seq: int,
    kind: CheckpointKind = "delta",
    *,
    status: str = "running",
    state: dict[str, Any] | None = None,
) -> StoredCheckpoint:
    """A row as the executor would build it: encoded body, and a snapshot for a base."""
    body, checksum = encode_body(
        CheckpointBody(
            trace_id=trace_id,
            seq=seq,
            graph_name="g",
            graph_hash="h1",
            step=seq,
            next_node="work",
            status=status,
            trigger="step",
            created_at=T0 + seq,
            barrier_counts={"review": 1},
            decisions={"review": Approve()},
            steps=[StepRecord(seq, "work", [StateDelta("count", seq), StateDelta("log", [seq])])],
        )
    )
    snapshot: bytes | None = None
    snapshot_checksum: int | None = None
    if kind == "base":
        snapshot, snapshot_checksum = encode_snapshot(
            state if state is not None else {"count": seq, "log": list(range(seq + 1))}
        )
    return StoredCheckpoint(
        trace_id=trace_id,
        seq=seq,
        kind=kind,
        step=seq,
        next_node="work",
        status=status,
        trigger="step",
        created_at=T0 + seq,
        body=body,
        checksum=checksum,
        snapshot=snapshot,
        snapshot_checksum=snapshot_checksum,
    )


def make_run(
    trace_id: str,
    *,
    status: str = "running",
    last_seq: int = 0,
    updated_at: float = T0,
    graph_name: str = "g",
    barrier_counts: dict[str, int] | None = None,
    pending_barrier: str | None = None,
    parent: ParentRef | None = None,
) -> RunInfo:
    """The runs-index row that goes with a save."""
    return RunInfo(
        trace_id=trace_id,
        graph_name=graph_name,
        graph_hash="h1",
        status=status,
        step=last_seq,
        next_node="work",
        last_seq=last_seq,
        created_at=T0,
        updated_at=updated_at,
        pending_barrier=pending_barrier,
        barrier_counts=barrier_counts if barrier_counts is not None else {},
        barrier_nodes=["review", "ship"],
        parent=parent,
    )


def demoted(row: StoredCheckpoint) -> StoredCheckpoint:
    """What a base looks like once a later base demoted it."""
    return msgspec.structs.replace(row, kind="delta", snapshot=None, snapshot_checksum=None)


async def save_kinds(store: CheckpointStore, trace_id: str, kinds: str) -> list[StoredCheckpoint]:
    """Save one row per letter of ``kinds`` ('b' base, 'd' delta), one save each."""
    rows = []
    for seq, letter in enumerate(kinds):
        row = make_row(trace_id, seq, "base" if letter == "b" else "delta")
        await store.save([row], make_run(trace_id, last_seq=seq, updated_at=T0 + seq))
        rows.append(row)
    return rows


def seqs(rows: list[StoredCheckpoint]) -> list[int]:
    return [r.seq for r in rows]


class TestSaveAndLoad:
    async def test_round_trip(self, store: CheckpointStore) -> None:
        """Saved rows come back byte for byte, and their body and snapshot decode."""
        rows = [make_row("t1", 0, "base"), make_row("t1", 1), make_row("t1", 2)]
        await store.save(rows[:1], make_run("t1"))
        await store.save(rows[1:], make_run("t1", last_seq=2))

        chain = await store.load_chain("t1")

        assert rows == chain
        assert [r.body for r in rows] == [r.body for r in chain]
        assert decode_snapshot(chain[0]) == {"count": 0, "log": [0]}
        body = decode_body(chain[2])
        assert (body.trace_id, body.seq, body.decisions) == ("t1", 2, {"review": Approve()})
        assert body.steps == [
            StepRecord(2, "work", [StateDelta("count", 2), StateDelta("log", [2])])
        ]

    async def test_load_chain_at_older_seq(self, store: CheckpointStore) -> None:
        """load_chain(seq) starts at the latest base at or before seq and stops at seq."""
        await save_kinds(store, "t1", "bddbd")

        assert seqs(await store.load_chain("t1", 2)) == [0, 1, 2]
        assert seqs(await store.load_chain("t1", 3)) == [3]
        assert seqs(await store.load_chain("t1", 4)) == [3, 4]
        assert seqs(await store.load_chain("t1")) == [3, 4]
        assert seqs(await store.load_chain("t1", 99)) == [3, 4]

    async def test_demotion_keeps_first_and_latest_base(self, store: CheckpointStore) -> None:
        """A new base demotes the previous bases except the first; older seqs stay restorable."""
        rows = await save_kinds(store, "t1", "bddbddbd")

        full = await store.load_chain("t1", 5)
        assert full == [rows[0], rows[1], rows[2], demoted(rows[3]), rows[4], rows[5]]
        assert full[3].body == rows[3].body
        assert await store.load_chain("t1") == [rows[6], rows[7]]
        assert seqs(await store.load_chain("t1", 4)) == [0, 1, 2, 3, 4]
        assert [h.kind for h in await store.history("t1")] == ["base"] + ["delta"] * 5 + [
            "base",
            "delta",
        ]

    async def test_several_bases_in_one_save(self, store: CheckpointStore) -> None:
        """Bases saved together demote each other like bases saved one by one."""
        rows = [make_row("t1", i, "base") for i in range(4)]
        await store.save(rows, make_run("t1", last_seq=3))

        assert await store.load_chain("t1", 2) == [rows[0], demoted(rows[1]), demoted(rows[2])]
        assert await store.load_chain("t1") == [rows[3]]

    async def test_no_base_yet(self, store: CheckpointStore) -> None:
        """Without a base at or before seq there is nothing to restore: []."""
        await save_kinds(store, "t1", "ddbd")

        assert await store.load_chain("t1", 1) == []
        assert seqs(await store.load_chain("t1")) == [2, 3]

    async def test_unknown_trace(self, store: CheckpointStore) -> None:
        """An unknown trace has no chain, no history and no run."""
        assert await store.load_chain("nope") == []
        assert await store.load_chain("nope", 3) == []
        assert await store.history("nope") == []
        assert await store.get_run("nope") is None
        assert await store.decisions_after("nope", 0) == []

    async def test_get_run_returns_saved_index_row(self, store: CheckpointStore) -> None:
        """get_run returns the runs-index row of the last save, every field intact."""
        run = make_run(
            "t1",
            last_seq=0,
            barrier_counts={"review": 2},
            pending_barrier="review#2",
            parent=ParentRef(trace_id="t0", seq=4),
        )
        await store.save([make_row("t1", 0, "base")], run)
        assert await store.get_run("t1") == run

        later = make_run("t1", status="completed", last_seq=1, updated_at=T0 + 5)
        await store.save([make_row("t1", 1)], later)
        assert await store.get_run("t1") == later

    async def test_save_without_rows_updates_the_run(self, store: CheckpointStore) -> None:
        """A save with no rows still updates the runs index."""
        await store.save([make_row("t1", 0, "base")], make_run("t1"))
        await store.save([], make_run("t1", status="waiting", updated_at=T0 + 1))

        run = await store.get_run("t1")
        assert run is not None and run.status == "waiting"
        assert seqs(await store.load_chain("t1")) == [0]

    async def test_seqs_must_increase(self, store: CheckpointStore) -> None:
        """A seq not after the trace's last one is a CheckpointError, and nothing is written."""
        rows = await save_kinds(store, "t1", "bd")
        before = await store.get_run("t1")

        with pytest.raises(CheckpointError, match="seq 1 does not follow seq 1"):
            await store.save([make_row("t1", 1)], make_run("t1", last_seq=9))
        with pytest.raises(CheckpointError, match="seq 2 does not follow seq 2"):
            await store.save([make_row("t1", 2), make_row("t1", 2)], make_run("t1", last_seq=9))

        assert await store.load_chain("t1", 9) == rows
        assert await store.get_run("t1") == before

    async def test_rows_of_another_trace_are_refused(self, store: CheckpointStore) -> None:
        """Rows must belong to the run they are saved with."""
        with pytest.raises(CheckpointError, match="cannot be saved with run 't1'"):
            await store.save([make_row("t2", 0, "base")], make_run("t1"))
        assert await store.load_chain("t2") == []
        assert await store.get_run("t1") is None

    async def test_traces_are_isolated(self, store: CheckpointStore) -> None:
        """Saving and demoting in one trace never touches another trace's rows."""
        a = await save_kinds(store, "a", "bd")
        b = await save_kinds(store, "b", "bdbdbd")

        assert await store.load_chain("a") == a
        assert await store.load_chain("b") == b[4:]
        assert await store.load_chain("b", 3) == [b[0], b[1], demoted(b[2]), b[3]]
        assert seqs(await store.load_chain("a", 0)) == [0]
        assert [h.seq for h in await store.history("a")] == [0, 1]


class TestIndex:
    async def test_runs_filter_order_and_limit(self, store: CheckpointStore) -> None:
        """runs() lists the most recently updated first, filtered by status and graph name."""
        for name, status, updated, graph in [
            ("r1", "completed", 1.0, "g"),
            ("r2", "running", 3.0, "g"),
            ("r3", "completed", 2.0, "other"),
            ("r4", "waiting", 4.0, "g"),
        ]:
            await store.save(
                [make_row(name, 0, "base", status=status)],
                make_run(name, status=status, updated_at=T0 + updated, graph_name=graph),
            )

        assert [r.trace_id for r in await store.runs()] == ["r4", "r2", "r3", "r1"]
        assert [r.trace_id for r in await store.runs(status="completed")] == ["r3", "r1"]
        assert [r.trace_id for r in await store.runs(graph_name="g")] == ["r4", "r2", "r1"]
        assert [r.trace_id for r in await store.runs(status="completed", graph_name="g")] == ["r1"]
        assert [r.trace_id for r in await store.runs(limit=2)] == ["r4", "r2"]
        assert await store.runs(status="failed") == []

    async def test_runs_reflect_latest_update(self, store: CheckpointStore) -> None:
        """A run moves to the front of runs() when it is saved again."""
        await store.save([make_row("r1", 0, "base")], make_run("r1", updated_at=T0 + 1))
        await store.save([make_row("r2", 0, "base")], make_run("r2", updated_at=T0 + 2))
        await store.save([make_row("r1", 1)], make_run("r1", last_seq=1, updated_at=T0 + 3))

        assert [(r.trace_id, r.last_seq) for r in await store.runs()] == [("r1", 1), ("r2", 0)]

    async def test_history_oldest_first_with_bytes(self, store: CheckpointStore) -> None:
        """history() lists every checkpoint oldest first, with its stored size in bytes."""
        rows = await save_kinds(store, "t1", "bdbdb")

        history = await store.history("t1")

        assert history == [
            CheckpointSummary(
                seq=r.seq,
                kind="delta" if r.seq == 2 else r.kind,
                step=r.step,
                next_node=r.next_node,
                status=r.status,
                trigger=r.trigger,
                created_at=r.created_at,
                bytes=len(r.body) + (len(r.snapshot or b"") if r.seq != 2 else 0),
            )
            for r in rows
        ]
        assert history[0].bytes == rows[0].size


class TestDecisions:
    async def _waiting(self, store: CheckpointStore, **kw: Any) -> None:
        await store.save([make_row("t1", 0, "base")], make_run("t1", status="waiting", **kw))

    async def test_unknown_trace(self, store: CheckpointStore) -> None:
        """A decision for a trace the store does not know is RunNotFound."""
        with pytest.raises(RunNotFound):
            await store.submit_decision("nope", "review#1", Approve())

    async def test_completed_run(self, store: CheckpointStore) -> None:
        """A completed run takes no decisions: RunFinished."""
        await store.save([make_row("t1", 0, "base")], make_run("t1", status="completed"))
        with pytest.raises(RunFinished):
            await store.submit_decision("t1", "review#1", Approve())

    async def test_not_a_barrier(self, store: CheckpointStore) -> None:
        """A decision for a node that is not a barrier is InvalidDecision."""
        await self._waiting(store)
        with pytest.raises(InvalidDecision, match="not a barrier node"):
            await store.submit_decision("t1", "work#1", Approve())
        with pytest.raises(InvalidDecision, match="not a barrier node"):
            await store.submit_decision("t1", "work", Approve(), every_occurrence=True)

    async def test_bad_barrier_id(self, store: CheckpointStore) -> None:
        """A malformed barrier id is InvalidDecision."""
        await self._waiting(store)
        with pytest.raises(InvalidDecision, match="bad barrier id"):
            await store.submit_decision("t1", "review#0", Approve())

    async def test_resolved_occurrence(self, store: CheckpointStore) -> None:
        """An occurrence that was reached and decided is InvalidDecision, and is not queued."""
        await self._waiting(store, barrier_counts={"review": 2}, pending_barrier="review#2")
        with pytest.raises(InvalidDecision, match="already resolved"):
            await store.submit_decision("t1", "review#1", Approve())
        assert await store.decisions_after("t1", 0) == []

    async def test_accepted_targets(self, store: CheckpointStore) -> None:
        """A wildcard, the pending occurrence and a future occurrence are accepted."""
        await self._waiting(store, barrier_counts={"review": 2}, pending_barrier="review#2")

        ids = [
            await store.submit_decision("t1", "review", Approve(), every_occurrence=True),
            await store.submit_decision("t1", "review#2", Reject("no")),
            await store.submit_decision("t1", "review#3", Edit({"x": 1})),
            await store.submit_decision("t1", "ship#1", Approve()),
        ]

        assert ids == sorted(ids) and len(set(ids)) == 4
        got = await store.decisions_after("t1", 0)
        assert [(d.id, d.barrier_id, d.decision) for d in got] == [
            (ids[0], "review#*", Approve()),
            (ids[1], "review#2", Reject("no")),
            (ids[2], "review#3", Edit({"x": 1})),
            (ids[3], "ship#1", Approve()),
        ]
        assert all(abs(d.created_at - now()) < 60 for d in got)

    async def test_decisions_after_cursor(self, store: CheckpointStore) -> None:
        """decisions_after returns the trace's decisions with id > cursor, in id order."""
        await self._waiting(store)
        await store.save([make_row("t2", 0, "base")], make_run("t2", status="waiting"))
        decisions: list[Decision] = [Approve(), Reject("a"), Reject("b")]
        ids = []
        for i, decision in enumerate(decisions):
            ids.append(await store.submit_decision("t1", f"review#{i + 1}", decision))
            await store.submit_decision("t2", "review", Approve(), every_occurrence=True)

        assert [d.id for d in await store.decisions_after("t1", 0)] == ids
        assert [d.decision for d in await store.decisions_after("t1", ids[0])] == decisions[1:]
        assert await store.decisions_after("t1", ids[-1]) == []
        assert len(await store.decisions_after("t2", 0)) == 3


class TestLeases:
    async def test_acquire_renew_and_conflict(self, store: CheckpointStore) -> None:
        """The owner may renew its lease; another owner gets RunLocked with the expiry time."""
        await store.acquire_lease("t1", Lease("a", 30.0))
        await store.acquire_lease("t1", Lease("a", 60.0))

        with pytest.raises(RunLocked) as info:
            await store.acquire_lease("t1", Lease("b", 30.0))

        assert info.value.trace_id == "t1"
        assert info.value.expires_at is not None
        assert 50 < info.value.expires_at - now() <= 60
        assert "'t1'" in str(info.value) and "expires in" in str(info.value)

    async def test_expired_lease_can_be_taken(self, store: CheckpointStore) -> None:
        """Once the ttl has passed without a renewal, another owner takes the lease."""
        await store.acquire_lease("t1", Lease("a", 0.05))
        await anyio.sleep(0.1)
        await store.acquire_lease("t1", Lease("b", 30.0))

        with pytest.raises(RunLocked):
            await store.acquire_lease("t1", Lease("a", 30.0))

    async def test_release(self, store: CheckpointStore) -> None:
        """Only the owner releases a lease; releasing lets another owner in."""
        await store.acquire_lease("t1", Lease("a", 30.0))
        await store.release_lease("t1", "b")
        with pytest.raises(RunLocked):
            await store.acquire_lease("t1", Lease("b", 30.0))

        await store.release_lease("t1", "a")
        await store.acquire_lease("t1", Lease("b", 30.0))
        await store.release_lease("nope", "a")

    async def test_acquire_returns_the_run_row(self, store: CheckpointStore) -> None:
        """acquire_lease returns the trace's runs-index row (None for a new trace), read in the
        same transaction, so starting or resuming a run costs one round trip."""
        first = await store.acquire_lease("t1", Lease("a", 30.0))
        assert (first.run, first.token) == (None, 1)
        await store.save([make_row("t1", 0, "base")], make_run("t1", status="waiting"))
        found = (await store.acquire_lease("t1", Lease("a", 30.0, token=1))).run
        assert found is not None
        assert ("t1", "waiting") == (found.trace_id, found.status)
        assert found.lease is not None
        assert (found.lease.owner, found.lease.token) == ("a", 1)

    async def test_final_save_releases_the_lease(self, store: CheckpointStore) -> None:
        """save(..., release=True) commits the rows and gives the lease up in one go."""
        lease = Lease("a", 30.0)
        await store.save([make_row("t1", 0, "base")], make_run("t1"), lease=lease)
        await store.save(
            [make_row("t1", 1, "delta")],
            make_run("t1", status="completed", last_seq=1),
            lease=lease,
            release=True,
        )
        assert [0, 1] == seqs(await store.load_chain("t1"))
        await store.acquire_lease("t1", Lease("b", 30.0))  # free now

    async def test_save_can_return_new_decisions(self, store: CheckpointStore) -> None:
        """save(decisions_after=cursor) returns the decisions submitted since the cursor, in
        the same round trip; without it, save returns none."""
        await store.save([make_row("t1", 0, "base")], make_run("t1", status="waiting"))
        first = await store.submit_decision("t1", "review#1", Approve())
        assert [] == await store.save([make_row("t1", 1, "delta")], make_run("t1", last_seq=1))
        found = await store.save(
            [make_row("t1", 2, "delta")], make_run("t1", last_seq=2), decisions_after=0
        )
        assert [(first, "review#1", Approve())] == [(d.id, d.barrier_id, d.decision) for d in found]
        assert [] == await store.save(
            [make_row("t1", 3, "delta")], make_run("t1", last_seq=3), decisions_after=first
        )

    async def test_leases_are_per_trace(self, store: CheckpointStore) -> None:
        """A lease on one trace does not lock another."""
        await store.acquire_lease("t1", Lease("a", 30.0))
        await store.acquire_lease("t2", Lease("b", 30.0))

    async def test_save_renews_and_takes_lease(self, store: CheckpointStore) -> None:
        """save(lease=...) takes the lease, so another owner is locked out afterwards."""
        await store.save([make_row("t1", 0, "base")], make_run("t1"), lease=Lease("a", 30.0))
        with pytest.raises(RunLocked):
            await store.acquire_lease("t1", Lease("b", 30.0))

    async def test_save_with_foreign_lease_writes_nothing(self, store: CheckpointStore) -> None:
        """A save while another owner holds the lease raises RunLocked and writes nothing."""
        rows = await save_kinds(store, "t1", "bd")
        before = await store.get_run("t1")
        await store.acquire_lease("t1", Lease("a", 30.0))

        with pytest.raises(RunLocked) as info:
            await store.save(
                [make_row("t1", 2, "base")],
                make_run("t1", status="completed", last_seq=2),
                lease=Lease("b", 30.0),
            )

        assert info.value.expires_at is not None
        assert await store.load_chain("t1", 9) == rows
        after = await store.get_run("t1")
        assert after is not None and msgspec.structs.replace(after, lease=None) == before
        await store.save([make_row("t1", 2)], make_run("t1", last_seq=2), lease=Lease("a", 30.0))


class TestFencing:
    """The fencing token: it grows with every change of owner, and every write checks it."""

    async def test_token_grows_with_every_owner_and_survives_release(
        self, store: CheckpointStore
    ) -> None:
        """a gets 1; b (after a released) gets 2; a renewal keeps the token."""
        a = await store.acquire_lease("t1", Lease("a", 30.0))
        assert a.token == 1
        assert (await store.acquire_lease("t1", Lease("a", 30.0, token=1))).token == 1
        await store.release_lease("t1", "a")
        assert (await store.acquire_lease("t1", Lease("b", 30.0))).token == 2

    async def test_a_stale_token_writes_nothing(self, store: CheckpointStore) -> None:
        """After a take-over, the former owner's save is LeaseLost and changes nothing."""
        a = await store.acquire_lease("t1", Lease("a", 30.0))
        lease_a = Lease("a", 30.0, token=a.token)
        await store.save([make_row("t1", 0, "base")], make_run("t1"), lease=lease_a)
        b = await store.acquire_lease("t1", Lease("b", 30.0), take_over=True)
        assert b.token == a.token + 1
        with pytest.raises(LeaseLost, match="taken over") as info:
            await store.save([make_row("t1", 1)], make_run("t1", last_seq=1), lease=lease_a)
        assert info.value.trace_id == "t1"
        assert seqs(await store.load_chain("t1")) == [0]
        await store.release_lease("t1", "a")  # not the holder: no effect
        run = await store.get_run("t1")
        assert run is not None and run.lease is not None and run.lease.owner == "b"
        await store.save(
            [make_row("t1", 1)], make_run("t1", last_seq=1), lease=Lease("b", 30.0, token=b.token)
        )

    async def test_expect_seq_refuses_a_driver_that_missed_writes(
        self, store: CheckpointStore
    ) -> None:
        """Taking a free lease back with expect_seq fails if another driver wrote meanwhile."""
        await store.save([make_row("t1", 0, "base")], make_run("t1"))
        await store.save([make_row("t1", 1)], make_run("t1", last_seq=1))
        with pytest.raises(LeaseLost, match="seq 1 written after this driver's seq 0"):
            await store.acquire_lease("t1", Lease("a", 30.0), expect_seq=0)
        assert (await store.acquire_lease("t1", Lease("a", 30.0), expect_seq=1)).token == 1

    async def test_a_dead_owner_on_this_host_never_blocks(self, store: CheckpointStore) -> None:
        """A lease held by a process of this host that has exited is taken at once; a live
        one (this process) is RunLocked naming its holder and expiry."""
        host, pid, started = this_process()
        done = await anyio.run_process([sys.executable, "-c", "import os; print(os.getpid())"])
        dead_pid = int(done.stdout)
        await store.acquire_lease("t1", Lease("ghost", 3600.0, 0, host, dead_pid, "x"))
        assert (await store.acquire_lease("t1", Lease("b", 30.0))).token == 2

        await store.acquire_lease("t2", Lease("me", 3600.0, 0, host, pid, started))
        with pytest.raises(RunLocked) as info:
            await store.acquire_lease("t2", Lease("other", 30.0))
        message = str(info.value)
        assert f"pid {pid} on {host}" in message and "until" in message
        assert "take_over=True" in message
        assert (await store.acquire_lease("t2", Lease("other", 30.0), take_over=True)).token == 2


class TestPrune:
    async def _run(
        self, store: CheckpointStore, trace_id: str, status: str, updated: float
    ) -> None:
        await store.save(
            [make_row(trace_id, 0, "base", status=status), make_row(trace_id, 1, status=status)],
            make_run(trace_id, status=status, last_seq=1, updated_at=T0 + updated),
        )

    async def test_prunes_only_old_completed_runs(self, store: CheckpointStore) -> None:
        """By default prune removes completed runs older than the cutoff, and all their data."""
        await self._run(store, "old-waiting", "waiting", 1)
        await store.submit_decision("old-waiting", "review#1", Approve())
        await self._run(store, "old-done", "completed", 2)
        await self._run(store, "old-failed", "failed", 3)
        await self._run(store, "new-done", "completed", 20)
        await store.acquire_lease("old-done", Lease("a", 30.0))

        gone = await store.prune(older_than=T0 + 10)

        assert gone == ["old-done"]
        assert await store.get_run("old-done") is None
        assert await store.load_chain("old-done") == []
        assert await store.history("old-done") == []
        await store.acquire_lease("old-done", Lease("b", 30.0))
        assert sorted(r.trace_id for r in await store.runs()) == [
            "new-done",
            "old-failed",
            "old-waiting",
        ]
        assert seqs(await store.load_chain("old-waiting")) == [0, 1]
        assert len(await store.decisions_after("old-waiting", 0)) == 1

    async def test_prune_other_statuses(self, store: CheckpointStore) -> None:
        """prune(statuses=...) removes failed and cancelled runs too, but never waiting ones."""
        await self._run(store, "w", "waiting", 1)
        await self._run(store, "f", "failed", 2)
        await self._run(store, "c", "cancelled", 3)

        gone = await store.prune(older_than=T0 + 10, statuses=("failed", "cancelled"))

        assert sorted(gone) == ["c", "f"]
        assert [r.trace_id for r in await store.runs()] == ["w"]

    async def test_prune_refuses_live_statuses(self, store: CheckpointStore) -> None:
        """Asking to prune waiting or running runs is a ValueError, and removes nothing."""
        await self._run(store, "w", "waiting", 1)
        with pytest.raises(ValueError, match="waiting"):
            await store.prune(older_than=T0 + 10, statuses=("waiting",))
        with pytest.raises(ValueError, match="running"):
            await store.prune(older_than=T0 + 10, statuses=("completed", "running"))
        assert seqs(await store.load_chain("w")) == [0, 1]


# -- property: load_chain against a reference model ---------------------------------------------

_chains = st.lists(
    st.tuples(st.sampled_from(["base", "delta"]), st.binary(max_size=64), st.integers(1, 3)),
    min_size=1,
    max_size=14,
)


def _raw_row(trace_id: str, seq: int, kind: str, payload: bytes) -> StoredCheckpoint:
    """A row with arbitrary bytes: stores never interpret body or snapshot."""
    snapshot = payload[::-1] + b"s" if kind == "base" else None
    return StoredCheckpoint(
        trace_id=trace_id,
        seq=seq,
        kind="base" if kind == "base" else "delta",
        step=seq * 2,
        next_node=None if seq % 3 == 0 else f"n{seq}",
        status="running",
        trigger="step",
        created_at=T0 + seq / 7,
        body=payload,
        checksum=zlib.crc32(payload),
        snapshot=snapshot,
        snapshot_checksum=None if snapshot is None else zlib.crc32(snapshot),
    )


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=_chains)
async def test_load_chain_matches_reference(
    store: CheckpointStore, spec: list[tuple[str, bytes, int]]
) -> None:
    """For random base/delta sequences saved in random batches, load_chain(seq) is the reference
    slice: latest base at or before seq (after demotion) up to seq, or [] without a base."""
    trace_id = f"t-{uuid.uuid4().hex}"  # the store outlives examples: a fresh trace each time
    rows = [_raw_row(trace_id, seq, kind, payload) for seq, (kind, payload, _) in enumerate(spec)]

    # Reference model: saved rows in order, demoting every earlier base but the first.
    model: list[StoredCheckpoint] = []
    for row in rows:
        if row.kind == "base":
            first = next((i for i, r in enumerate(model) if r.kind == "base"), None)
            model = [
                demoted(r) if r.kind == "base" and i != first else r for i, r in enumerate(model)
            ]
        model.append(row)

    i = 0
    while i < len(rows):
        batch = rows[i : i + spec[i][2]]
        i += len(batch)
        await store.save(batch, make_run(trace_id, last_seq=batch[-1].seq))

    for seq in range(-1, len(rows) + 1):
        visible = [r for r in model if r.seq <= seq]
        starts = [k for k, r in enumerate(visible) if r.kind == "base"]
        expected = visible[starts[-1] :] if starts else []
        assert await store.load_chain(trace_id, seq) == expected
    starts = [k for k, r in enumerate(model) if r.kind == "base"]
    assert await store.load_chain(trace_id) == (model[starts[-1] :] if starts else [])


# -- claim_runs: runs that need a driver ---------------------------------------------------------


async def _dead_pid() -> int:
    """The pid of a process of this host that has exited."""
    done = await anyio.run_process([sys.executable, "-c", "import os; print(os.getpid())"])
    return int(done.stdout)


def _twin(store: CheckpointStore) -> CheckpointStore:
    """Another store object on the same data, as another process would open it (MemoryStore:
    the same object; its data lives in it)."""
    if isinstance(store, SQLiteStore):
        return SQLiteStore(store.path, commit_path="portable")  # on threads: truly at once
    if type(store).__name__ == "PostgresStore":  # loaded already: no psycopg import here
        pg: Any = store
        twin: CheckpointStore = gx.PostgresStore(pg.dsn, schema=pg.schema, max_size=2)
        return twin
    return store


async def _park(store: CheckpointStore, trace_id: str, *, ready_at: float | None = None) -> None:
    """A run parked at barrier review#1: waiting, lease given up (its driver left)."""
    run = make_run(
        trace_id, status="waiting", barrier_counts={"review": 1}, pending_barrier="review#1"
    )
    run.ready_at = ready_at
    lease = Lease(f"driver-{trace_id}", 30.0)
    await store.save([make_row(trace_id, 0, "base", status="waiting")], run, lease=lease)
    await store.release_lease(trace_id, lease.owner)


async def _queue(
    store: CheckpointStore, trace_id: str, at: float, *, graph_name: str = "g", **kw: Any
) -> None:
    """A run queued at ``at`` (as ex.start(queue=True) records it: ready at once)."""
    run = make_run(trace_id, status="queued", updated_at=at, graph_name=graph_name, **kw)
    run.ready_at = at
    await store.save([make_row(trace_id, 0, "base", status="queued")], run)


def _leases(*owners: str, ttl: float = 30.0) -> list[Lease]:
    host, pid, started = this_process()
    return [Lease(o, ttl, 0, host, pid, started) for o in owners]


class TestClaims:
    """claim_runs: which runs need a driver, in which order, and that each goes to one claimer."""

    async def test_what_needs_a_driver(self, store: CheckpointStore) -> None:
        """Queued, interrupted, running without a live holder (none, released, expired, a dead
        process of this host), and waiting runs that are ready or whose claimer died are
        claimed; runs with a live holder, parked or not yet due, and finished runs are not."""
        host, pid, started = this_process()
        dead = Lease("ghost", 3600.0, 0, host, await _dead_pid(), "x")
        alive = Lease("me", 3600.0, 0, host, pid, started)
        t = now()

        async def run(trace_id: str, status: str, lease: Lease | None = None) -> None:
            await store.save(
                [make_row(trace_id, 0, "base", status=status)],
                make_run(trace_id, status=status),
                lease=lease,
            )

        expected = ["queued", "interrupted", "running-free", "running-expired", "running-dead"]
        await _queue(store, "queued", t)
        await run("interrupted", "interrupted", Lease("old", 30.0))
        await store.release_lease("interrupted", "old")
        await run("running-free", "running")
        await run("running-expired", "running", Lease("slow", 0.001))
        await run("running-dead", "running", dead)
        await run("running-live", "running", alive)
        await _queue(store, "queued-live", t)
        await store.acquire_lease("queued-live", alive)
        await _park(store, "waiting-due", ready_at=t - 1)
        await _park(store, "waiting-later", ready_at=t + 3600)
        await _park(store, "waiting-parked")
        await run("waiting-dead", "waiting", dead)  # claimed, then its claimer died
        for status in ("completed", "failed", "cancelled"):
            await run(status, status)
        await anyio.sleep(0.01)  # running-expired's lease runs out

        claims = await store.claim_runs([], _leases(*(f"w{i}" for i in range(20))))

        assert sorted([*expected, "waiting-due", "waiting-dead"]) == sorted(
            c.trace_id for c in claims
        )
        assert [] == await store.claim_runs([], _leases("late"))

    async def test_a_dead_holder_is_found_among_live_ones(self, store: CheckpointStore) -> None:
        """Runs held by a dead process of this host are claimed at once even when older runs
        are held by live processes of this host (another worker, this one)."""
        host, pid, started = this_process()
        other = await anyio.open_process([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            other_started = _start_time(other.pid) or ""
            for i in range(3):
                await _queue(store, f"live-{i}", T0 + i)
                await store.acquire_lease(
                    f"live-{i}", Lease(f"o{i}", 3600.0, 0, host, other.pid, other_started)
                )
            await _queue(store, "mine", T0 + 3)
            await store.acquire_lease("mine", Lease("me", 3600.0, 0, host, pid, started))
            await _queue(store, "dead", T0 + 9)
            await store.acquire_lease("dead", Lease("d", 3600.0, 0, host, await _dead_pid(), "x"))

            assert ["dead"] == [c.trace_id for c in await store.claim_runs([], _leases("x"))]

            # A busy fleet (every claim filled by newer runs) still takes a dead holder's runs
            # first among those ready, at once or (Postgres) at its next claim.
            ghost = Lease("d2", 3600.0, 0, host, await _dead_pid(), "y")
            await store.acquire_lease("dead", ghost, take_over=True)  # x died too
            for i in range(3):
                await _queue(store, f"new-{i}", T0 + 20 + i)
            got = [c.trace_id for _ in range(2) for c in await store.claim_runs([], _leases("y"))]
            assert "dead" in got and "new-1" not in got
        finally:
            other.kill()
            await other.aclose()

    async def test_oldest_ready_first_the_limit_and_the_leases(
        self, store: CheckpointStore
    ) -> None:
        """Runs go oldest ready first (ready_at, else updated_at), at most one per lease; the
        i-th run gets the i-th lease with a grown token, and its ready_at is cleared."""
        await _queue(store, "c", T0 + 3)
        await _queue(store, "a", T0 + 1)
        await store.save([make_row("b", 0, "base")], make_run("b", updated_at=T0 + 2))
        await _queue(store, "d", T0 + 4)

        first = await store.claim_runs([], _leases("x", "y"))

        assert ["a", "b"] == [c.trace_id for c in first]
        assert ["x", "y"] == [c.lease.owner for c in first]
        assert [1, 1] == [c.lease.token for c in first]
        assert ("queued", None) == (first[0].run.status, first[0].run.ready_at)
        assert first[0].run.lease is not None and first[0].run.lease.owner == "x"
        stored = await store.get_run("a")
        assert stored is not None and stored.ready_at is None
        assert stored.lease is not None and stored.lease.token == 1
        assert ["c", "d"] == [c.trace_id for c in await store.claim_runs([], _leases("z", "w"))]

    async def test_graph_filter(self, store: CheckpointStore) -> None:
        """Only runs of the graphs named are claimed; an empty list means every graph."""
        await _queue(store, "a1", T0 + 1, graph_name="alpha")
        await _queue(store, "b1", T0 + 2, graph_name="beta")
        await _queue(store, "c1", T0 + 3, graph_name="gamma")
        got = await store.claim_runs(["gamma", "beta"], _leases("x", "y", "z"))
        assert ["b1", "c1"] == [c.trace_id for c in got]
        assert ["a1"] == [c.trace_id for c in await store.claim_runs([], _leases("w"))]

    async def test_a_claimed_run_waits_for_its_lease_to_go(self, store: CheckpointStore) -> None:
        """A claimed run is not claimed again while its claimer holds it; released (or
        expired) it is, with the next token, and the old claimer's writes are refused."""
        await _queue(store, "q", T0)
        (one,) = await store.claim_runs([], _leases("x", ttl=0.2))
        assert [] == await store.claim_runs([], _leases("y"))
        await store.save([make_row("q", 1)], make_run("q", last_seq=1), lease=one.lease)

        await anyio.sleep(0.25)  # x stops renewing: its lease expires
        (two,) = await store.claim_runs([], _leases("y"))
        assert ("q", "running", one.lease.token + 1) == (
            two.trace_id,
            two.run.status,
            two.lease.token,
        )
        with pytest.raises(LeaseLost):
            await store.save([make_row("q", 2)], make_run("q", last_seq=2), lease=one.lease)
        await store.release_lease("q", "y")
        (three,) = await store.claim_runs([], _leases("z"))
        assert three.lease.token == two.lease.token + 1

    async def test_a_claim_given_back_is_claimable_again(self, store: CheckpointStore) -> None:
        """A claimer that does not drive a run hands it back with one fenced save without rows
        (ready now, lease released): the next claim takes it, with the next token."""
        await _park(store, "w", ready_at=T0)
        (got,) = await store.claim_runs([], _leases("x"))
        assert [] == await store.claim_runs([], _leases("y"))
        back = msgspec.structs.replace(got.run, ready_at=now())
        await store.save([], back, lease=got.lease, release=True)
        (again,) = await store.claim_runs([], _leases("y"))
        assert ("w", got.lease.token + 1) == (again.trace_id, again.lease.token)
        assert seqs(await store.load_chain("w")) == [0]

    async def test_a_decision_makes_a_waiting_run_ready(self, store: CheckpointStore) -> None:
        """A decision for a parked run makes it claimable at once and wakes the workers'
        hint; the run row says since when."""
        await _park(store, "w")
        assert [] == await store.claim_runs([], _leases("x"))
        woken = False

        async def wait() -> None:
            nonlocal woken
            woken = await store.wait_for(WORK, 5.0)

        before = now()
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await store.submit_decision("w", "review#1", Approve())
            if type(store).__name__ == "PostgresStore":  # NOTIFY: see test_postgres.py
                tg.cancel_scope.cancel()
        assert woken or type(store).__name__ == "PostgresStore"
        run = await store.get_run("w")
        assert run is not None and run.ready_at is not None
        assert before - 5 <= run.ready_at <= now() + 5  # the database's clock on Postgres
        (got,) = await store.claim_runs([], _leases("x"))
        assert ("w", "waiting") == (got.trace_id, got.run.status)

    async def test_a_waiting_save_that_finds_decisions_is_ready(
        self, store: CheckpointStore
    ) -> None:
        """A waiting save whose decisions_after read finds decisions (they came before the
        run parked) leaves the run ready; one that finds none keeps what the writer put."""
        await store.save([make_row("w", 0, "base")], make_run("w", barrier_counts={"review": 0}))
        await store.submit_decision("w", "review#1", Approve())  # running: not woken
        run = await store.get_run("w")
        assert run is not None and run.ready_at is None

        waiting = make_run(
            "w",
            status="waiting",
            last_seq=1,
            barrier_counts={"review": 1},
            pending_barrier="review#1",
        )
        found = await store.save([make_row("w", 1)], waiting, decisions_after=0)
        assert ["review#1"] == [d.barrier_id for d in found]
        run = await store.get_run("w")
        assert run is not None and run.ready_at is not None

        waiting.last_seq, waiting.ready_at = 2, T0 + 99
        await store.save([make_row("w", 2)], waiting, decisions_after=found[-1].id)
        run = await store.get_run("w")
        assert run is not None and run.ready_at == T0 + 99

    async def test_concurrent_claimers_never_share_a_run(self, store: CheckpointStore) -> None:
        """Many claimers at once, on one store object and (SQLite, Postgres) on several
        opened on the same database, each get distinct runs, and together all of them."""
        traces = [f"q{i:02}" for i in range(40)]
        for i, trace_id in enumerate(traces):
            await _queue(store, trace_id, T0 + i)
        twins = [store, _twin(store), _twin(store)]
        got: list[str] = []

        async def claimer(s: CheckpointStore, k: int) -> None:
            while batch := await s.claim_runs([], _leases(*(f"c{k}-{len(got)}-{j}" for j in "ab"))):
                got.extend(c.trace_id for c in batch)

        try:
            async with anyio.create_task_group() as tg:
                for k in range(8):
                    tg.start_soon(claimer, twins[k % len(twins)], k)
        finally:
            for s in twins[1:]:
                if s is not store:
                    await s.aclose()
        assert sorted(got) == traces

    async def test_bad_arguments(self, store: CheckpointStore) -> None:
        """A bare string for graph_names, an owner given twice or a lease that is not one is
        refused before anything is claimed; no leases claims nothing."""
        await _queue(store, "q", T0)
        with pytest.raises(TypeError, match=r"\['g'\]"):
            await store.claim_runs("g", _leases("x"))
        with pytest.raises(ValueError, match="appears twice"):
            await store.claim_runs([], _leases("x", "x"))
        with pytest.raises(TypeError, match="Lease values"):
            await store.claim_runs([], ["x"])  # type: ignore[list-item]
        assert [] == await store.claim_runs([], [])
        assert ["q"] == [c.trace_id for c in await store.claim_runs(["g"], _leases("x"))]
