"""SQLiteStore's two commit paths: which one a store picks, how the fast one gives way, trio.

The store contract itself runs on both paths (conftest.store); these are the path-specific
promises: the fast path never holds the event loop while the file is locked elsewhere, folds the
WAL back off the loop, and both paths run on trio.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from test_sqlite import make_row, make_run, save_kinds

import graphexec as gx
from graphexec._decisions import Approve
from graphexec.checkpoint import SQLiteStore
from graphexec.checkpoint._record import Lease
from graphexec.checkpoint._sqlite_db import Database
from graphexec.exceptions import CheckpointError, RunLocked

PATHS: list[Literal["fast", "portable"]] = ["fast", "portable"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every store, on both anyio backends (the checkpoint folder's default is asyncio only)."""
    return str(request.param)


@pytest.mark.parametrize(
    ("synchronous", "asked", "used"),
    [
        ("NORMAL", "auto", "fast"),
        ("FULL", "auto", "portable"),
        ("NORMAL", "portable", "portable"),
        ("FULL", "fast", "fast"),
    ],
)
async def test_path_is_chosen_when_the_store_opens(
    tmp_path: Path, synchronous: Literal["NORMAL", "FULL"], asked: Any, used: str
) -> None:
    """auto: fast with synchronous=NORMAL (commits do not wait for the disk), portable with FULL."""
    store = SQLiteStore(tmp_path / "x.db", synchronous=synchronous, commit_path=asked)
    assert store.commit_path_used is None
    async with store:
        await store.runs()
        assert store.commit_path_used == used
    assert store.commit_path_used is None


def test_unknown_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="commit_path must be"):
        SQLiteStore(tmp_path / "x.db", commit_path="turbo")  # type: ignore[arg-type]


@pytest.mark.parametrize("path", PATHS)
async def test_locked_file_waits_off_the_loop(tmp_path: Path, path: Any) -> None:
    """While another connection holds the write lock, a save waits (on a worker thread) and the
    event loop keeps running other tasks; the save lands once the lock is released."""
    db = tmp_path / "x.db"
    async with SQLiteStore(db, commit_path=path) as store:
        await save_kinds(store, "t1", "b")
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        saved = anyio.Event()
        ticks = 0

        async def save() -> None:
            await store.save([make_row("t1", 1)], make_run("t1", last_seq=1))
            saved.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(save)
            while ticks < 20:  # the loop is free while the save waits for the lock
                await anyio.sleep(0.005)
                ticks += 1
            assert not saved.is_set()
            other.execute("COMMIT")
            other.close()
        assert saved.is_set()
        assert [r.seq for r in await store.load_chain("t1", 1)] == [0, 1]


@pytest.mark.parametrize("path", PATHS)
async def test_lock_held_past_the_busy_timeout(tmp_path: Path, path: Any) -> None:
    """A lock held longer than busy_timeout is a CheckpointError naming the file; nothing is
    written, and the store works again once the lock is gone."""
    db = tmp_path / "x.db"
    async with SQLiteStore(db, commit_path=path, busy_timeout=0.05) as store:
        await save_kinds(store, "t1", "b")
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(CheckpointError, match="database is locked") as info:
            await store.save([make_row("t1", 1)], make_run("t1", last_seq=1))
        assert str(db) in str(info.value)
        other.execute("ROLLBACK")
        other.close()
        assert [h.seq for h in await store.history("t1")] == [0]
        await store.save([make_row("t1", 1)], make_run("t1", last_seq=1))
        assert [h.seq for h in await store.history("t1")] == [0, 1]


async def test_fast_path_folds_the_wal_back(tmp_path: Path) -> None:
    """SQLite's automatic checkpoint is off on a fast connection; the store folds the WAL back
    itself (on the thread), so writing 16 MB leaves a WAL of a few MB, not 16."""
    db = tmp_path / "x.db"
    big = {"blob": "x" * 200_000}
    async with SQLiteStore(db, commit_path="fast") as store:
        for seq in range(80):
            row = make_row("t1", seq, "base")
            row = gx.checkpoint.StoredCheckpoint(
                **{f: getattr(row, f) for f in row.__struct_fields__ if f != "snapshot"},
                snapshot=repr(big).encode() + str(seq).encode(),
            )
            await store.save([row], make_run("t1", last_seq=seq))
        wal = (tmp_path / "x.db-wal").stat().st_size
    assert wal < 8 * 2**20, wal


# -- trio ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_store_on_trio(tmp_path: Path, path: Any) -> None:
    """Every kind of store call works on trio, on both paths."""
    pytest.importorskip("trio")

    async def main() -> None:
        async with SQLiteStore(tmp_path / "x.db", commit_path=path) as store:
            rows = await save_kinds(store, "t1", "bdbd")
            assert store.commit_path_used == path
            assert await store.load_chain("t1") == rows[2:]
            assert [r.seq for r in await store.load_chain("t1", 1)] == [0, 1]
            assert [h.seq for h in await store.history("t1")] == [0, 1, 2, 3]
            decision_id = await store.submit_decision("t1", "review#1", Approve())
            assert [d.id for d in await store.decisions_after("t1", 0)] == [decision_id]
            await store.acquire_lease("t1", Lease("me", 30.0))
            with pytest.raises(RunLocked):
                await store.acquire_lease("t1", Lease("someone else", 30.0))
            await store.release_lease("t1", "me")
            assert [r.trace_id for r in await store.runs()] == ["t1"]
            async with anyio.create_task_group() as tg:  # concurrent saves of other traces
                for i in range(10):
                    tg.start_soon(save_kinds, store, f"c{i}", "bdd")
            assert len(await store.runs()) == 11

    anyio.run(main, backend="trio")


@pytest.mark.parametrize("path", PATHS)
def test_run_waits_and_resumes_on_trio(tmp_path: Path, path: Any) -> None:
    """On trio, a run checkpoints to SQLite, waits at a barrier, and a new store on the same
    file (as a restarted process) resumes it to completion."""
    pytest.importorskip("trio")

    async def add(state: Any) -> dict[str, list[int]]:
        return {"log": [len(state["log"])]}

    graph = (
        gx.GraphBuilder("trio-sqlite")
        .reducer("log", gx.reducers.append)
        .node("a", add)
        .barrier("ok")
        .node("b", add)
        .edge("a", "ok")
        .edge("ok", "b")
        .start("a")
        .end("b")
        .build()
    )
    policy = gx.CheckpointPolicy(every_step=True)

    async def main() -> tuple[str, gx.GraphResult]:
        async with SQLiteStore(tmp_path / "x.db", commit_path=path) as store:
            ex = gx.GraphExecutor(store=store, policy=policy)
            async with ex.execute_stream(graph, {"log": []}, trace_id="t") as run:
                async for event in run:
                    if isinstance(event, gx.BarrierWaiting):
                        break
            left = run.result.status
        async with SQLiteStore(tmp_path / "x.db", commit_path=path) as store:
            ex = gx.GraphExecutor(store=store, policy=policy)
            async with ex.resume_from(graph, "t") as again:
                async for event in again:
                    if isinstance(event, gx.BarrierWaiting):
                        await again.handle.approve(event.barrier_id)
        return left, again.result

    left, result = anyio.run(main, backend="trio")
    assert left == "waiting"
    assert result.status == "completed"
    assert result.state["log"] == [0, 1]


async def test_fast_path_starts_a_new_wal_on_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first write after opening (which starts a new WAL, whose header SQLite syncs) runs on
    the worker thread; later writes and reads run on the loop's thread."""
    threads: list[str] = []
    on_thread = Database._on_thread

    def spy(self: Database, fn: Any, writes: int) -> Any:
        threads.append("read" if not writes else "write")
        return on_thread(self, fn, writes)

    monkeypatch.setattr(Database, "_on_thread", spy)
    async with SQLiteStore(tmp_path / "x.db", commit_path="fast") as store:
        await store.runs()
        assert threads == []
        await save_kinds(store, "t1", "bdd")
        await store.load_chain("t1")
        assert threads == ["write"]
