"""PostgresStore's claim_runs beyond the contract suite: the NOTIFY a run that becomes
claimable sends (and the saves that send none) and the worker elsewhere it wakes, a claimer
that skips rows other transactions hold instead of waiting, and a schema from before version 4
whose runs workers can take."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import anyio
import psycopg
import pytest

import graphexec as gx
from graphexec._decisions import Approve
from graphexec.checkpoint import _postgres as postgres_module
from graphexec.checkpoint._hints import WORK
from graphexec.checkpoint._record import Lease
from graphexec.checkpoint._sql import migrations

from test_store_contract import make_row, make_run  # isort: skip

pytestmark = pytest.mark.anyio


def _schema() -> str:
    return f"t_{uuid.uuid4().hex[:16]}"


def _queued(trace_id: str, at: float) -> gx.checkpoint.RunInfo:
    run = make_run(trace_id, status="queued", updated_at=at)
    run.ready_at = at
    return run


async def test_notify_work_only_when_a_run_becomes_claimable(pg_dsn: str) -> None:
    """A queued save and a decision for a parked run send 'work' on gx_<schema>, after their
    commit; the saves of a run being driven and a decision for a running run send nothing."""
    schema = _schema()
    async with gx.PostgresStore(pg_dsn, schema=schema) as store:
        await store.runs()  # the schema exists before we listen
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as listener:
            await listener.execute(f"LISTEN gx_{schema}")

            async def heard() -> list[str]:
                await anyio.sleep(0.02)  # NOTIFY is delivered after the commit, promptly
                return [n.payload async for n in listener.notifies(timeout=0.1)]

            lease = Lease("driver", 30.0)
            await store.save([make_row("r", 0, "base")], make_run("r"), lease=lease)
            for seq in (1, 2):
                await store.save([make_row("r", seq)], make_run("r", last_seq=seq), lease=lease)
            await store.submit_decision("r", "review#1", Approve())
            assert [] == await heard()

            await store.save([make_row("q", 0, "base", status="queued")], _queued("q", time.time()))
            assert ["work"] == await heard()

            waiting = make_run(
                "w", status="waiting", barrier_counts={"review": 1}, pending_barrier="review#1"
            )
            await store.save([make_row("w", 0, "base", status="waiting")], waiting)
            assert [] == await heard()
            await store.submit_decision("w", "review#1", Approve())
            assert ["work"] == await heard()


async def test_a_claimer_skips_rows_another_transaction_holds(pg_dsn: str) -> None:
    """While another transaction holds a run's lease row (a save or a grant under way), a
    claim takes the next run at once instead of waiting; the held run is claimed after."""
    schema = _schema()
    async with gx.PostgresStore(pg_dsn, schema=schema) as store:
        for i, trace_id in enumerate(["a", "b"]):
            await store.save(
                [make_row(trace_id, 0, "base", status="queued")], _queued(trace_id, 1.0 + i)
            )
        async with await psycopg.AsyncConnection.connect(pg_dsn) as other:
            await other.execute(f"SELECT 1 FROM {schema}.leases WHERE trace_id = 'a' FOR UPDATE")
            with anyio.fail_after(5):
                got = await store.claim_runs([], [Lease("x", 30.0)])
            assert ["b"] == [c.trace_id for c in got]
            await other.rollback()
        assert ["a"] == [c.trace_id for c in await store.claim_runs([], [Lease("y", 30.0)])]


async def test_runs_of_a_version_2_schema_are_claimed(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs written before schema 4 (an interrupted one with no lease row) get a lease row
    from the migration and are claimed by its one statement."""
    schema = _schema()
    with monkeypatch.context() as m:
        m.setattr(postgres_module, "migrations", lambda backend: migrations(backend)[:2])
        async with gx.PostgresStore(pg_dsn, schema=schema) as store:
            await store.load_chain("x")  # creates the schema at version 2
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(
            f"INSERT INTO {schema}.runs (trace_id, graph_name, graph_hash, status, step, "
            "next_node, last_seq, created_at, updated_at) "
            "VALUES ('old', 'g', 'h1', 'interrupted', 3, 'work', 3, 1.0, 2.0)"
        )
    async with gx.PostgresStore(pg_dsn, schema=schema) as store:
        old = await store.get_run("old")  # migrates to the latest version
        assert old is not None and old.ready_at is None
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            cur = await conn.execute(f"SELECT owner, token FROM {schema}.leases")
            assert [("", 0)] == await cur.fetchall()
        (got,) = await store.claim_runs(["g"], [Lease("w", 30.0)])
        assert ("old", "interrupted", 1) == (got.trace_id, got.run.status, got.lease.token)


async def test_a_worker_on_another_store_object_is_woken(pg_dsn: str) -> None:
    """A worker waiting for work on its own store object (another process, as far as the
    database can tell) is woken by a queued save and by a decision for a parked run, long
    before its poll interval ends (LISTEN/NOTIFY carries the "work" hint)."""
    schema = _schema()
    async with (
        gx.PostgresStore(pg_dsn, schema=schema, max_size=2) as writer,
        gx.PostgresStore(pg_dsn, schema=schema, max_size=2) as worker,
    ):
        await writer.runs()
        await worker.wait_for(WORK, 0.05)  # its LISTEN connection is open from here on
        waiting = make_run(
            "w", status="waiting", barrier_counts={"review": 1}, pending_barrier="review#1"
        )
        await writer.save([make_row("w", 0, "base", status="waiting")], waiting)

        async def wake(action: Callable[[], Awaitable[object]]) -> float:
            woken: list[bool] = []

            async def wait() -> None:
                woken.append(await worker.wait_for(WORK, 30.0))

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.sleep(0.1)  # the worker is waiting (the hint would wait for it)
                t0 = time.monotonic()
                await action()
            assert woken == [True]
            return time.monotonic() - t0

        queued = [make_row("q", 0, "base", status="queued")]
        assert await wake(lambda: writer.save(queued, _queued("q", time.time()))) < 10
        assert await wake(lambda: writer.submit_decision("w", "review#1", Approve())) < 10
