"""PostgresStore's wake-up hints and connection health: an event tail in another process woken
by NOTIFY, no NOTIFY for a trace nobody tails, ``listen_dsn=`` behind PgBouncer in transaction
mode (and a LISTEN through it found deaf), in-process hints from the event log writer, and the
first operations after the server closed every connection of the store."""

from __future__ import annotations

import functools
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from structlog.testing import capture_logs

import graphexec as gx
from graphexec.checkpoint import _pg_listen
from graphexec.checkpoint._hints import events_topic

from pg_events_worker import STEPS  # isort: skip  (helper modules next to this file)
from test_store_contract import make_row, make_run, save_kinds, seqs  # isort: skip

WORKER = Path(__file__).with_name("pg_events_worker.py")
POLL = 10.0
"""The tails' poll interval here: a tail that had to poll would take at least this long."""


def new_schema() -> str:
    return f"t_{uuid.uuid4().hex[:16]}"


def chain(n: int = 3) -> gx.Graph:
    """``a1 -> ... -> a<n>``, each adding 1 to ``n``."""

    async def add(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"n": state["n"] + 1}

    builder = gx.GraphBuilder("chain")
    for i in range(1, n + 1):
        builder = builder.node(f"a{i}", add)
        if i > 1:
            builder = builder.edge(f"a{i - 1}", f"a{i}")
    return builder.start("a1").end(f"a{n}").build()


def start_a(dsn: str, schema: str, trace_id: str, go: Path) -> subprocess.Popen[str]:
    """Process A (pg_events_worker.py)."""
    return subprocess.Popen(
        [sys.executable, str(WORKER), dsn, schema, trace_id, str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def drain(conn: psycopg.Connection[Any]) -> list[str]:
    """The payloads of the notifications this connection received (waits 0.3 s for more)."""
    return [n.payload for n in conn.notifies(timeout=0.3)]


async def test_a_tail_in_another_process_is_woken_by_notify(pg_dsn: str, tmp_path: Path) -> None:
    """Process A drives a run whose events are committed one by one over about a second;
    this process tails it with a 10 s poll interval and sees every event, the whole run in
    far less than one poll interval: each commit woke the tail (LISTEN/NOTIFY)."""
    schema, go = new_schema(), tmp_path / "go"
    proc = start_a(pg_dsn, schema, "tick", go)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "STARTED", proc.stderr and proc.stderr.read()
        async with gx.PostgresStore(pg_dsn, schema=schema, max_size=2) as store:
            ex = gx.GraphExecutor(store=store, event_poll_interval=POLL)
            # A's first checkpoint (readiness: another process writes it, nothing to await)
            while await store.get_run("tick") is None:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            events: list[gx.GraphEvent] = []
            t0 = 0.0
            async for event in ex.events("tick"):
                if not events:
                    go.touch()  # A's nodes run from now on, while this tail waits
                    t0 = time.monotonic()
                events.append(event)
            elapsed = time.monotonic() - t0
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "DONE completed" in out, err
    assert isinstance(events[0], gx.GraphStart) and isinstance(events[-1], gx.GraphComplete)
    assert [e.data for e in events if isinstance(e, gx.Custom)] == [
        {"step": i} for i in range(1, STEPS + 1)
    ]
    ids = [e.event_id for e in events]
    assert ids == sorted(set(ids))
    assert elapsed < POLL / 2, f"the tail waited for its poll ({elapsed:.1f}s): no wake-up"


async def test_a_trace_nobody_tails_sends_no_notify(pg_dsn: str) -> None:
    """Saves and event appends send NOTIFY only for a trace with a live watcher: none for a
    run nobody tails; one watched by another store object gets them, until that store
    closes (its watcher row goes with it)."""
    schema = new_schema()
    channel = _pg_listen.channel(schema)
    with psycopg.connect(pg_dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {channel}")
        async with gx.PostgresStore(pg_dsn, schema=schema, max_size=2) as store:
            ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
            await ex.execute(chain(), {"n": 0}, trace_id="quiet")
            assert [p for p in drain(listener) if p.startswith("events:")] == []

            tail = gx.PostgresStore(pg_dsn, schema=schema, max_size=1)
            # The first wait registers the watcher and returns at once (read again now).
            assert await tail.wait_for(events_topic("loud"), POLL) is True
            await ex.execute(chain(), {"n": 0}, trace_id="loud")
            await ex.execute(chain(), {"n": 0}, trace_id="quiet")  # its next turn
            got = [p for p in drain(listener) if p.startswith("events:")]
            assert set(got) == {"events:loud"}

            await tail.aclose()
            await ex.execute(chain(), {"n": 0}, trace_id="loud")  # its next turn
            assert [p for p in drain(listener) if p.startswith("events:")] == []


async def test_waiters_take_turns_reading_the_listen_connection(pg_dsn: str) -> None:
    """Many waiters of one store object share its LISTEN connection, one reading at a time:
    after the waiters that read first have left (their short waits ended), the ones still
    waiting are each woken by a NOTIFY from another connection, and only on their topic."""
    schema = new_schema()
    async with gx.PostgresStore(pg_dsn, schema=schema, max_size=1) as store:
        await store.wait_for("warm-up", 0.01)  # opens the LISTEN connection
        got: dict[int, bool] = {}
        short_done = anyio.Event()

        async def wait(i: int) -> None:
            got[i] = await store.wait_for(f"topic:{i}", POLL if i % 2 else 0.05)
            if sum(1 for k in got if k % 2 == 0) == 5:
                short_done.set()

        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(wait, i)
            await short_done.wait()
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                for i in (1, 3, 5, 7, 9):
                    conn.execute(
                        "SELECT pg_notify(%s, %s)", (_pg_listen.channel(schema), f"topic:{i}")
                    )
        assert got == {i: bool(i % 2) for i in range(10)}
        assert time.monotonic() - t0 < POLL / 2  # woken, not timed out


async def test_in_process_tails_are_woken_by_the_writer(tmp_path: Path) -> None:
    """A tail through another executor on the same store object (no live subscription to
    the driver) is woken by the event log's in-process hint, on a store with no hints
    between processes (SQLite): the run's events arrive in far less than the poll."""

    async def slow(state: Mapping[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
        for i in range(3):
            await anyio.sleep(0.1)
            await ctx.emit({"i": i})
        return {"n": 1}

    graph = gx.GraphBuilder("slow").node("slow", slow).start("slow").end("slow").build()
    async with gx.SQLiteStore(tmp_path / "runs.db") as store:
        driver = gx.GraphExecutor(store=store)
        tail = gx.GraphExecutor(store=store, event_poll_interval=POLL)
        async with driver:
            await driver.start(graph, {"n": 0}, trace_id="t")
            t0 = time.monotonic()
            events = [e async for e in tail.events("t")]
            elapsed = time.monotonic() - t0
    assert isinstance(events[-1], gx.GraphComplete)
    assert [e.data for e in events if isinstance(e, gx.Custom)] == [{"i": i} for i in range(3)]
    assert elapsed < POLL / 2, f"the tail waited for its poll ({elapsed:.1f}s)"


async def test_listen_dsn_behind_pgbouncer(
    pg_dsn: str, pgbouncer_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind PgBouncer in transaction mode, listen_dsn= (the server's address) carries the
    hints: a tail through PgBouncer is woken by a run driven through PgBouncer. Without it,
    the LISTEN hears nothing: the store says so once and its waiters poll."""
    monkeypatch.setattr(_pg_listen, "PROBE_WAIT", 0.5)
    schema = new_schema()
    async with (
        gx.PostgresStore(pgbouncer_dsn, schema=schema, max_size=2) as driving,
        gx.PostgresStore(pgbouncer_dsn, schema=schema, listen_dsn=pg_dsn, max_size=2) as tailing,
    ):
        ex = gx.GraphExecutor(store=driving, policy=gx.CheckpointPolicy(every_step=True))
        await ex.execute(chain(), {"n": 0}, trace_id="t")
        assert await tailing.wait_for(events_topic("t"), POLL) is True  # registered
        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(ex.execute, chain(), {"n": 0}, trace_id="t"))
            woken = await tailing.wait_for(events_topic("t"), POLL)
        assert woken and time.monotonic() - t0 < POLL / 2
        assert tailing.hints_across_processes  # its probe came back through listen_dsn

    with capture_logs() as logs:
        async with gx.PostgresStore(pgbouncer_dsn, schema=schema, max_size=1) as deaf:
            assert await deaf.wait_for("work", 0.05) is False
            await anyio.sleep(0.6)  # past PROBE_WAIT: the probe never came back
            assert await deaf.wait_for("work", 0.05) is False
            assert not deaf.hints_across_processes
    assert [e for e in logs if "LISTEN gets no notifications" in e["event"]]


async def test_the_next_operations_after_the_server_closed_every_connection_succeed(
    pg_dsn: str,
) -> None:
    """pg_terminate_backend on every connection of the store (as a server restart would):
    the next read and the next write succeed (dead pooled connections are skipped at
    checkout), and the LISTEN connection is opened again and hears its probe."""
    name = f"gx-{uuid.uuid4().hex[:12]}"
    dsn = make_conninfo(pg_dsn, application_name=name)
    count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    async with gx.PostgresStore(dsn, schema=new_schema(), min_size=2, max_size=3) as store:
        rows = await save_kinds(store, "t1", "bd")
        await store.wait_for("work", 0.05)  # opens the LISTEN connection
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            assert admin.execute(count, (name,)).fetchone() == (3,)  # two pooled + LISTEN
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (name,),
            )
            for _ in range(500):  # until the backends have exited (readiness, not timing)
                if admin.execute(count, (name,)).fetchone() == (0,):
                    break
                await anyio.sleep(0.01)
            else:
                raise AssertionError("the terminated backends never exited")

        assert await store.load_chain("t1") == rows
        await store.save([make_row("t1", 2)], make_run("t1", last_seq=2))
        assert seqs(await store.load_chain("t1")) == [0, 1, 2]
        for _ in range(200):  # the listener comes back after its backoff (0.5 s)
            await store.wait_for("work", 0.05)
            if store.hints_across_processes:
                break
        assert store.hints_across_processes
