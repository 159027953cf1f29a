"""SQLiteStore specifics: schema versions and migrations, reopening, sharing a file, damaged rows."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from graphexec._decisions import Approve
from graphexec._directives import StateDelta
from graphexec.checkpoint import CheckpointStore, RunInfo, SQLiteStore, StoredCheckpoint
from graphexec.checkpoint import _sqlite as sqlite_module
from graphexec.checkpoint._record import (
    CheckpointBody,
    CheckpointKind,
    EventBatch,
    Lease,
    StepRecord,
    decode_body,
    decode_snapshot,
    encode_body,
    encode_snapshot,
)
from graphexec.exceptions import CheckpointError, RunLocked

HERE = Path(__file__).parent
MIGRATIONS = sqlite_module._migrations()
LATEST = MIGRATIONS[-1][0]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every store, on both anyio backends (the checkpoint folder's default is asyncio only)."""
    return str(request.param)


def make_row(trace_id: str, seq: int, kind: CheckpointKind = "delta") -> StoredCheckpoint:
    """A row with a real encoded body (and snapshot, for a base)."""
    body, checksum = encode_body(
        CheckpointBody(
            trace_id=trace_id,
            seq=seq,
            graph_name="g",
            graph_hash="h1",
            step=seq,
            next_node="work",
            status="waiting",
            trigger="step",
            created_at=1.0 + seq,
            steps=[StepRecord(seq, "work", [StateDelta("count", seq)])],
        )
    )
    snapshot, snapshot_checksum = (
        encode_snapshot({"count": seq, "log": list(range(seq + 1))})
        if kind == "base"
        else (None, None)
    )
    return StoredCheckpoint(
        trace_id=trace_id,
        seq=seq,
        kind=kind,
        step=seq,
        next_node="work",
        status="waiting",
        trigger="step",
        created_at=1.0 + seq,
        body=body,
        checksum=checksum,
        snapshot=snapshot,
        snapshot_checksum=snapshot_checksum,
    )


def make_run(trace_id: str, *, last_seq: int = 0) -> RunInfo:
    return RunInfo(
        trace_id=trace_id,
        graph_name="g",
        graph_hash="h1",
        status="waiting",
        step=last_seq,
        next_node="work",
        last_seq=last_seq,
        created_at=1.0,
        updated_at=1.0 + last_seq,
        barrier_nodes=["review"],
    )


async def save_kinds(store: CheckpointStore, trace_id: str, kinds: str) -> list[StoredCheckpoint]:
    """Save one row per letter of ``kinds`` ('b' base, 'd' delta), one save each."""
    rows = [make_row(trace_id, seq, "base" if k == "b" else "delta") for seq, k in enumerate(kinds)]
    for row in rows:
        await store.save([row], make_run(trace_id, last_seq=row.seq))
    return rows


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    db.close()
    return version


def make_big_row(trace_id: str, seq: int) -> StoredCheckpoint:
    """A delta whose body (about 4 KB of hex text) is stored compressed."""
    body, checksum = encode_body(
        CheckpointBody(
            trace_id=trace_id,
            seq=seq,
            graph_name="g",
            graph_hash="h1",
            step=seq,
            next_node="work",
            status="waiting",
            trigger="step",
            created_at=1.0 + seq,
            steps=[StepRecord(seq, "work", [StateDelta("log", [f"{i:064x}" for i in range(60)])])],
        )
    )
    return StoredCheckpoint(
        trace_id=trace_id,
        seq=seq,
        kind="delta",
        step=seq,
        next_node="work",
        status="waiting",
        trigger="step",
        created_at=1.0 + seq,
        body=body,
        checksum=checksum,
    )


def raw_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    rows = db.execute(sql).fetchall()
    db.close()
    return rows


def file_modes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}


def raw_execute(path: Path, sql: str, *args: object) -> None:
    """Change the file behind the store's back, as a bad disk or another tool would."""
    db = sqlite3.connect(path)
    with db:
        db.execute(sql, args)
    db.close()


class TestSchema:
    async def test_new_file_gets_latest_version(self, tmp_path: Path) -> None:
        """A new file is created in WAL mode with every table, at the latest schema version."""
        path = tmp_path / "x.db"
        async with SQLiteStore(path) as store:
            assert await store.runs() == []

        assert user_version(path) == LATEST == 5
        db = sqlite3.connect(path)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        db.close()
        assert {
            "checkpoints",
            "runs",
            "decisions",
            "leases",
            "events",
            "event_segments",
            "cancel_requests",
        } <= tables
        assert mode == "wal"

    async def test_reopen_applies_only_new_migrations(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Reopening applies no migration twice; a newer NNN_*.sql file is applied once."""
        path = tmp_path / "x.db"
        async with SQLiteStore(path) as store:
            await save_kinds(store, "t1", "bd")
        async with SQLiteStore(path) as store:
            assert len(await store.load_chain("t1")) == 2
        assert user_version(path) == LATEST

        extra = (
            LATEST + 1,
            "999_test.sql",
            "CREATE TABLE applied (n INTEGER); INSERT INTO applied VALUES (1);",
        )
        monkeypatch.setattr(sqlite_module, "_migrations", lambda: [*MIGRATIONS, extra])
        for _ in range(2):
            async with SQLiteStore(path) as store:
                assert len(await store.load_chain("t1")) == 2

        db = sqlite3.connect(path)
        assert db.execute("SELECT count(*) FROM applied").fetchone()[0] == 1
        db.close()
        assert user_version(path) == LATEST + 1

    async def test_failed_migration_changes_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A migration that fails is rolled back whole, user_version included."""
        path = tmp_path / "x.db"
        async with SQLiteStore(path) as store:
            await save_kinds(store, "t1", "b")
        bad = (
            LATEST + 1,
            "999_bad.sql",
            "CREATE TABLE half (n INTEGER); INSERT INTO missing VALUES (1);",
        )
        monkeypatch.setattr(sqlite_module, "_migrations", lambda: [*MIGRATIONS, bad])

        store = SQLiteStore(path)
        with pytest.raises(CheckpointError, match="migration 999_bad.sql failed"):
            await store.runs()
        await store.aclose()

        assert user_version(path) == LATEST
        db = sqlite3.connect(path)
        assert (
            db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half'").fetchone()[0] == 0
        )
        db.close()

    async def test_version_1_file_is_migrated_and_keeps_its_rows(self, tmp_path: Path) -> None:
        """A file written at schema version 1 (no body_encoding column) is migrated to the
        latest version on open; its rows load as they were and new rows go in beside them."""
        path = tmp_path / "x.db"
        old = [make_row("t1", 0, "base"), make_row("t1", 1)]
        db = sqlite3.connect(path, isolation_level=None)
        db.executescript(MIGRATIONS[0][2])  # schema 1, as graphexec 0.1 created it
        db.execute("PRAGMA user_version = 1")
        db.executemany(
            "INSERT INTO checkpoints VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (r.trace_id, r.seq, r.kind, r.step, r.next_node, r.status, r.trigger)
                + (r.created_at, r.body, r.checksum, r.snapshot, r.snapshot_checksum)
                for r in old
            ],
        )
        db.close()
        assert user_version(path) == 1

        big = make_big_row("t1", 2)
        async with SQLiteStore(path) as store:
            assert await store.load_chain("t1", 1) == old
            assert user_version(path) == LATEST
            await store.save([big], make_run("t1", last_seq=2))
            assert (await store.load_chain("t1"))[-1] == big
        encodings = raw_rows(path, "SELECT seq, body_encoding FROM checkpoints ORDER BY seq")
        assert encodings == [(0, 0), (1, 0), (2, 1)]

    @pytest.mark.parametrize("version", [1, 2, 3, 4])
    async def test_every_older_version_migrates_to_the_latest(
        self, tmp_path: Path, version: int
    ) -> None:
        """A file at schema 1 to 4 (each as its migrations left it, with a run, a lease and
        a decision in it) opens at the latest version: its rows read back as they were, the
        lease keeps its holder, the event log (schema 4) works on it, and a run interrupted
        before schema 5 is claimed by a worker."""
        path = tmp_path / f"v{version}.db"
        old = [make_row("t1", 0, "base"), make_row("t1", 1)]
        db = sqlite3.connect(path, isolation_level=None)
        for number, _name, script in MIGRATIONS[:version]:
            assert number <= version
            db.executescript(script)
        db.execute(f"PRAGMA user_version = {version}")
        db.executemany(
            "INSERT INTO checkpoints (trace_id, seq, kind, step, next_node, status, trigger, "
            "created_at, body, checksum, snapshot, snapshot_checksum) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (r.trace_id, r.seq, r.kind, r.step, r.next_node, r.status, r.trigger)
                + (r.created_at, r.body, r.checksum, r.snapshot, r.snapshot_checksum)
                for r in old
            ],
        )
        db.execute(
            "INSERT INTO leases (trace_id, owner, expires_at) VALUES ('t1', 'someone', ?)",
            (time.time() + 3600,),
        )
        db.execute(
            "INSERT INTO runs (trace_id, graph_name, graph_hash, status, step, next_node, "
            "last_seq, created_at, updated_at) VALUES "
            "('t1', 'g', 'h1', 'running', 1, 'work', 1, 1.0, 1.0), "
            "('t3', 'g', 'h1', 'interrupted', 4, 'work', 4, 1.0, 2.0)"
        )
        db.close()

        async with SQLiteStore(path) as store:
            assert await store.load_chain("t1", 1) == old
            assert user_version(path) == LATEST == 5
            # A lease written before schema 3 has no token and no host: it still blocks.
            with pytest.raises(RunLocked):
                await store.acquire_lease("t1", Lease("me", 30.0))
            assert await store.next_event_segment("t1") == 1
            taken = await store.acquire_lease("t2", Lease("me", 30.0))
            mine = Lease("me", 30.0, taken.token)
            batch = EventBatch(first_id=(1 << 32) | 1, last_id=(1 << 32) | 2, data=b"\x90")
            await store.append_events("t2", batch, lease=mine)
            assert await store.events_after("t2", 0) == [batch]
            claims = await store.claim_runs([], [Lease("worker", 30.0), Lease("w2", 30.0)])
            assert ["t3"] == [c.trace_id for c in claims]  # t1's holder is still there
        tables = raw_rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")
        assert {("events",), ("event_segments",), ("cancel_requests",)} <= set(tables)

    async def test_newer_file_is_refused_untouched(self, tmp_path: Path) -> None:
        """A file with a schema version newer than the code is a CheckpointError; it is unchanged."""
        path = tmp_path / "new.db"
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE future (x)")
        db.execute("PRAGMA user_version = 99")
        db.commit()
        db.close()
        before = path.read_bytes()

        store = SQLiteStore(path)
        with pytest.raises(CheckpointError, match="schema version 99, newer"):
            await store.load_chain("t1")
        with pytest.raises(CheckpointError, match="schema version 99, newer"):
            await store.runs()
        await store.aclose()

        assert path.read_bytes() == before
        assert not (tmp_path / "new.db-wal").exists()

    async def test_not_a_database(self, tmp_path: Path) -> None:
        """A file that is not SQLite is a CheckpointError, not a sqlite3 error."""
        path = tmp_path / "junk.db"
        path.write_bytes(b"this is not a database" * 100)
        store = SQLiteStore(path)
        with pytest.raises(CheckpointError, match="not a usable SQLite file"):
            await store.runs()
        await store.aclose()


class TestLifecycle:
    async def test_in_memory_database(self) -> None:
        """An in-memory database (":memory:") works: no WAL, nothing shared with other processes."""
        async with SQLiteStore(":memory:", busy_timeout=0.1) as store:
            rows = await save_kinds(store, "t1", "bd")
            assert await store.load_chain("t1") == rows

    async def test_data_survives_reopen(self, tmp_path: Path) -> None:
        """Everything saved is there after aclose, in a new store on the same path."""
        path = tmp_path / "x.db"
        store = SQLiteStore(path)
        rows = await save_kinds(store, "t1", "bdd")
        decision_id = await store.submit_decision("t1", "review#1", Approve())
        await store.aclose()

        store = SQLiteStore(path)
        try:
            assert await store.load_chain("t1") == rows
            assert [d.id for d in await store.decisions_after("t1", 0)] == [decision_id]
            assert [r.trace_id for r in await store.runs()] == ["t1"]
        finally:
            await store.aclose()

    async def test_async_with_closes_and_store_reopens(self, tmp_path: Path) -> None:
        """`async with` closes the store (the WAL is folded back); the next call reopens it."""
        path = tmp_path / "x.db"
        async with SQLiteStore(path) as store:
            await save_kinds(store, "t1", "bd")
            assert (tmp_path / "x.db-wal").exists()
        wal = tmp_path / "x.db-wal"
        assert not wal.exists() or wal.stat().st_size == 0

        try:
            assert len(await store.load_chain("t1")) == 2
        finally:
            await store.aclose()
        await store.aclose()

    def test_unclosed_store_does_not_block_exit(self, tmp_path: Path) -> None:
        """A process that never closes its store still exits (the worker thread is a daemon)."""
        script = (
            "import anyio, sys\n"
            "from graphexec.checkpoint import SQLiteStore\n"
            "store = SQLiteStore(sys.argv[1])\n"
            "anyio.run(store.runs)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "x.db")], timeout=15, check=False
        )
        assert done.returncode == 0

    async def test_two_stores_on_one_file(self, tmp_path: Path) -> None:
        """Two stores on one file (as two processes) see each other's writes and leases."""
        path = tmp_path / "x.db"
        async with SQLiteStore(path) as one, SQLiteStore(path) as two:
            rows = await save_kinds(one, "t1", "bd")
            assert await two.load_chain("t1") == rows
            decision_id = await two.submit_decision("t1", "review#1", Approve())
            assert [d.id for d in await one.decisions_after("t1", 0)] == [decision_id]

            await one.acquire_lease("t1", Lease("worker-1", 30.0))
            with pytest.raises(RunLocked):
                await two.acquire_lease("t1", Lease("worker-2", 30.0))
            with pytest.raises(RunLocked):
                await two.save(
                    [make_row("t1", 2)], make_run("t1", last_seq=2), lease=Lease("worker-2", 30.0)
                )
            await one.save(
                [make_row("t1", 2)], make_run("t1", last_seq=2), lease=Lease("worker-1", 30.0)
            )
            await one.release_lease("t1", "worker-1")
            await two.acquire_lease("t1", Lease("worker-2", 30.0))
            assert len(await two.load_chain("t1")) == 3

    async def test_cancelled_save_leaves_no_open_transaction(self, tmp_path: Path) -> None:
        """A save cancelled in flight commits or rolls back whole; the store stays usable."""
        async with SQLiteStore(tmp_path / "x.db") as store:
            await save_kinds(store, "t1", "b")
            for seq in range(1, 20):
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await store.save([make_row("t1", seq)], make_run("t1", last_seq=seq))
            await store.save([make_row("t1", 20)], make_run("t1", last_seq=20))
            await store.submit_decision("t1", "review", Approve(), every_occurrence=True)

            chain = [r.seq for r in await store.load_chain("t1")]
            assert chain[0] == 0 and chain[-1] == 20 and chain == sorted(chain)

    async def test_concurrent_saves_from_one_process(self, tmp_path: Path) -> None:
        """Twenty tasks saving different traces at once all land, each trace intact."""
        async with SQLiteStore(tmp_path / "x.db") as store:

            async def drive(trace_id: str) -> None:
                for seq in range(5):
                    row = make_row(trace_id, seq, "base" if seq % 2 == 0 else "delta")
                    await store.save(
                        [row], make_run(trace_id, last_seq=seq), lease=Lease(trace_id, 30)
                    )

            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(drive, f"t{i}")

            assert len(await store.runs()) == 20
            for i in range(20):
                assert [r.seq for r in await store.load_chain(f"t{i}", 3)] == [0, 1, 2, 3]
                assert [r.seq for r in await store.load_chain(f"t{i}")] == [4]
                assert [h.seq for h in await store.history(f"t{i}")] == [0, 1, 2, 3, 4]


class TestCompressedBodies:
    async def test_large_bodies_are_stored_compressed(self, tmp_path: Path) -> None:
        """A body of kilobytes is stored compressed and comes back byte for byte; small ones are
        stored as they are."""
        path = tmp_path / "x.db"
        async with SQLiteStore(path) as store:
            rows = [*await save_kinds(store, "t1", "b"), make_big_row("t1", 1)]
            await store.save([rows[1]], make_run("t1", last_seq=1))
            assert await store.load_chain("t1") == rows
        stored = raw_rows(path, "SELECT seq, body_encoding, length(body) FROM checkpoints")
        assert [(seq, enc) for seq, enc, _ in stored] == [(0, 0), (1, 1)]
        size = stored[1][2]
        assert isinstance(size, int)  # length(body) of a stored row
        assert size < len(rows[1].body) * 3 // 4

    async def test_damaged_compressed_body(self, tmp_path: Path) -> None:
        """A compressed body that no longer inflates is a CheckpointError naming trace and seq."""
        path = tmp_path / "x.db"
        async with SQLiteStore(path) as store:
            await save_kinds(store, "t1", "b")
            await store.save([make_big_row("t1", 1)], make_run("t1", last_seq=1))
            raw_execute(
                path,
                "UPDATE checkpoints SET body = CAST(substr(body, 1, 40) || x'00ff00ff' AS BLOB) "
                "WHERE seq = 1",
            )
            with pytest.raises(CheckpointError, match="cannot be inflated") as info:
                await store.load_chain("t1")
            assert (info.value.trace_id, info.value.seq) == ("t1", 1)


class TestDamagedRows:
    async def test_flipped_byte_in_body(self, tmp_path: Path) -> None:
        """A body with a flipped byte is a CheckpointError naming trace and seq; others decode."""
        path = tmp_path / "x.db"
        async with SQLiteStore(path) as store:
            await save_kinds(store, "t1", "bdd")
            await save_kinds(store, "t2", "bdd")
            body = (await store.load_chain("t1"))[1].body
            damaged = body[:10] + bytes([body[10] ^ 0x01]) + body[11:]
            raw_execute(
                path, "UPDATE checkpoints SET body = ? WHERE trace_id = 't1' AND seq = 1", damaged
            )

            chain = await store.load_chain("t1")
            decode_body(chain[0])
            with pytest.raises(CheckpointError, match="damaged") as info:
                decode_body(chain[1])
            assert "trace 't1'" in str(info.value) and "seq 1" in str(info.value)
            assert (info.value.trace_id, info.value.seq) == ("t1", 1)
            for row in await store.load_chain("t2"):
                decode_body(row)
            decode_snapshot((await store.load_chain("t2"))[0])

    async def test_truncated_snapshot(self, tmp_path: Path) -> None:
        """A truncated snapshot is a CheckpointError naming trace and seq; others decode."""
        path = tmp_path / "x.db"
        async with SQLiteStore(path) as store:
            await save_kinds(store, "t1", "bd")
            await save_kinds(store, "t2", "bd")
            raw_execute(
                path,
                "UPDATE checkpoints SET snapshot = substr(snapshot, 1, length(snapshot) - 3) "
                "WHERE trace_id = 't1' AND seq = 0",
            )

            chain = await store.load_chain("t1")
            decode_body(chain[0])
            with pytest.raises(CheckpointError) as info:
                decode_snapshot(chain[0])
            assert "trace 't1'" in str(info.value) and "seq 0" in str(info.value)
            assert decode_snapshot((await store.load_chain("t2"))[0]) == {"count": 0, "log": [0]}


class TestFiles:
    async def test_new_files_are_owner_only(self, tmp_path: Path) -> None:
        """The database, -wal and -shm files a store creates are 0600, whatever the umask."""
        path = tmp_path / "x.db"
        async with SQLiteStore(path) as store:
            await save_kinds(store, "t1", "bd")
            modes = file_modes(tmp_path)
        assert modes == {"x.db": 0o600, "x.db-wal": 0o600, "x.db-shm": 0o600}

    async def test_file_mode_is_configurable(self, tmp_path: Path) -> None:
        """file_mode sets the permissions exactly (a umask does not take bits away)."""
        path = tmp_path / "x.db"
        async with SQLiteStore(path, file_mode=0o660) as store:
            await save_kinds(store, "t1", "b")
            modes = file_modes(tmp_path)
        assert modes == {"x.db": 0o660, "x.db-wal": 0o660, "x.db-shm": 0o660}

    async def test_existing_file_keeps_its_mode(self, tmp_path: Path) -> None:
        """A file that already exists is opened as it is: its permissions are the owner's call."""
        path = tmp_path / "x.db"
        sqlite3.connect(path).close()
        path.chmod(0o644)
        async with SQLiteStore(path) as store:
            await save_kinds(store, "t1", "b")
        assert path.stat().st_mode & 0o777 == 0o644

    async def test_file_in_a_missing_folder(self, tmp_path: Path) -> None:
        """A file that cannot be created is a CheckpointError naming it, not an OSError."""
        path = tmp_path / "missing" / "x.db"
        store = SQLiteStore(path)
        with pytest.raises(CheckpointError, match="cannot create SQLite file") as info:
            await store.runs()
        assert str(path) in str(info.value)
        await store.aclose()

    def test_bad_file_mode_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="file_mode"):
            SQLiteStore(tmp_path / "x.db", file_mode=0o1777)


def test_concurrent_first_opens_never_fail(tmp_path: Path) -> None:
    """Four processes open each of 150 new files at the same instant; every open succeeds.

    Before the fix about 1 open in 150 failed with "database is locked": switching a new file
    to WAL takes an exclusive lock and SQLite does not wait for it with the busy timeout.
    """
    files = 150
    start = time.time() + 1.5  # the workers' imports must be done before the first file
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "open_worker.py"),
                str(tmp_path),
                str(files),
                str(start),
                "0.005",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [w.communicate(timeout=60) for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, [err for _, err in outputs]
    assert "".join(out for out, _ in outputs) == ""
    for i in range(files):
        assert user_version(tmp_path / f"{i}.db") == LATEST
