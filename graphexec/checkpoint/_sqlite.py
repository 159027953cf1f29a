"""SQLiteStore: the CheckpointStore contract in one SQLite file, shared by tasks and processes.

The file is opened lazily (WAL mode, ``busy_timeout``), its schema is created or migrated from
the versioned SQL files in ``checkpoints/sqlite`` (``PRAGMA user_version`` holds the version),
and every operation runs as one function on aiosqlite's connection thread, inside one
transaction. Writers use ``BEGIN IMMEDIATE``, so several processes can share a file.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite
import anyio
import msgspec

from .._decisions import Decision
from ..exceptions import CheckpointError, RunLocked
from ._base import StoreBase, check_decision_target, check_rows, prunable_statuses
from ._record import (
    CheckpointSummary,
    EventBatch,
    Lease,
    ParentRef,
    RunInfo,
    StoredCheckpoint,
    StoredDecision,
    now,
)

__all__ = ("SQLiteStore",)

T = TypeVar("T")

_MIGRATION_NAME = re.compile(r"^(\d+)_[\w.-]*\.sql$")
_MAX_SEQ = 2**63 - 1

_json_encoder = msgspec.json.Encoder()
_counts_decoder = msgspec.json.Decoder(dict[str, int])
_nodes_decoder = msgspec.json.Decoder(list[str])
_parent_decoder = msgspec.json.Decoder(ParentRef)
_decision_encoder = msgspec.msgpack.Encoder()
_decision_decoder = msgspec.msgpack.Decoder(Decision)

# -- SQL --------------------------------------------------------------------------------------

_ROW_COLUMNS = (
    "trace_id, seq, kind, step, next_node, status, trigger, created_at, "
    "body, checksum, snapshot, snapshot_checksum"
)
_INSERT_ROW = f"INSERT INTO checkpoints ({_ROW_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
_LAST_SEQ = "SELECT max(seq) FROM checkpoints WHERE trace_id = ?"
# Run once after a batch with a base is inserted: every base between the first and the newest
# loses its snapshot (it keeps its deltas).
_DEMOTE = (
    "UPDATE checkpoints SET kind = 'delta', snapshot = NULL, snapshot_checksum = NULL "
    "WHERE trace_id = ?1 AND kind = 'base' "
    "AND seq > (SELECT min(seq) FROM checkpoints WHERE trace_id = ?1 AND kind = 'base') "
    "AND seq < (SELECT max(seq) FROM checkpoints WHERE trace_id = ?1 AND kind = 'base')"
)
# Before a batch with a base is inserted: every base but the first loses its snapshot.
_DEMOTE_ALL = (
    "UPDATE checkpoints SET kind = 'delta', snapshot = NULL, snapshot_checksum = NULL "
    "WHERE trace_id = ?1 AND kind = 'base' "
    "AND seq > (SELECT min(seq) FROM checkpoints WHERE trace_id = ?1 AND kind = 'base')"
)
_LOAD_CHAIN = (
    f"SELECT {_ROW_COLUMNS} FROM checkpoints WHERE trace_id = ?1 AND seq <= ?2 AND seq >= "
    "(SELECT max(seq) FROM checkpoints WHERE trace_id = ?1 AND kind = 'base' AND seq <= ?2) "
    "ORDER BY seq"
)
_HISTORY = (
    "SELECT seq, kind, step, next_node, status, trigger, created_at, "
    "length(body) + coalesce(length(snapshot), 0) "
    "FROM checkpoints WHERE trace_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
)  # a page: the newest ``limit`` below ``before`` (reversed to oldest first by the caller)
_RUN_COLUMNS = (
    "trace_id, graph_name, graph_hash, status, step, next_node, last_seq, created_at, "
    "updated_at, pending_barrier, barrier_counts, barrier_nodes, parent"
)
_UPSERT_RUN = (
    f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (trace_id) DO UPDATE SET graph_name = excluded.graph_name, "
    "graph_hash = excluded.graph_hash, status = excluded.status, step = excluded.step, "
    "next_node = excluded.next_node, last_seq = excluded.last_seq, "
    "created_at = excluded.created_at, updated_at = excluded.updated_at, "
    "pending_barrier = excluded.pending_barrier, barrier_counts = excluded.barrier_counts, "
    "barrier_nodes = excluded.barrier_nodes, parent = excluded.parent"
)
_GET_RUN = f"SELECT {_RUN_COLUMNS} FROM runs WHERE trace_id = ?"
# Takes a free or expired lease, or renews our own; changes nothing if another owner holds it.
_TAKE_LEASE = (
    "INSERT INTO leases (trace_id, owner, expires_at) VALUES (?1, ?2, ?3) "
    "ON CONFLICT (trace_id) DO UPDATE SET owner = excluded.owner, "
    "expires_at = excluded.expires_at "
    "WHERE leases.owner = excluded.owner OR leases.expires_at <= ?4"
)
_LEASE_EXPIRY = "SELECT expires_at FROM leases WHERE trace_id = ?"
_LEASE_ROW = "SELECT owner, expires_at FROM leases WHERE trace_id = ?"
_RELEASE_LEASE = "DELETE FROM leases WHERE trace_id = ? AND owner = ?"
_INSERT_EVENTS = "INSERT INTO events (trace_id, last_id, first_id, data) VALUES (?,?,?,?)"
_EVENTS_AFTER = (
    "SELECT first_id, last_id, data FROM events WHERE trace_id = ? AND last_id > ? ORDER BY last_id"
)
_NEXT_SEGMENT = (
    "INSERT INTO event_segments (trace_id, segment) VALUES (?, 1) "
    "ON CONFLICT (trace_id) DO UPDATE SET segment = segment + 1 RETURNING segment"
)
_HAS_CANCEL = "SELECT 1 FROM cancel_requests WHERE trace_id = ?"
_TAKE_CANCEL = "DELETE FROM cancel_requests WHERE trace_id = ?"
_DECISIONS_AFTER = (
    "SELECT id, barrier_id, decision, created_at FROM decisions "
    "WHERE trace_id = ? AND id > ? ORDER BY id"
)


class SQLiteStore(StoreBase):
    """Checkpoints, runs index, decision inbox and leases in one SQLite file.

    One store object serves any number of runs in a process: statements are serialized on one
    connection's thread. Several processes may open the same file (WAL mode, ``busy_timeout``,
    ``BEGIN IMMEDIATE`` for writes). The file is opened on first use, and again after
    :meth:`aclose`.

    Args:
        path: The database file; created with its schema if missing.
        synchronous: ``"NORMAL"`` (default) loses at most the last commits on power loss, never
            consistency; ``"FULL"`` syncs the WAL on every commit.
        busy_timeout: Seconds to wait for another writer before giving up with a CheckpointError.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 5.0,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        self.path = os.fspath(path)
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._conn: aiosqlite.Connection | None = None
        self._open_lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- connection ---------------------------------------------------------------------------

    async def _connection(self) -> aiosqlite.Connection:
        conn = self._conn
        if conn is not None:
            return conn
        async with self._open_lock:
            if self._conn is None:
                # isolation_level=None: no implicit BEGIN; every transaction is explicit.
                # timeout= is SQLite's busy timeout: how long to wait for another writer.
                conn = aiosqlite.connect(
                    self.path, isolation_level=None, timeout=self._busy_timeout
                )
                # aiosqlite's worker thread is not a daemon, so a store that is never closed
                # would keep the interpreter from exiting. Each transaction runs whole in one
                # call on that thread, so being cut off at exit is a crash SQLite recovers from
                # (the open transaction rolls back).
                conn._thread.daemon = True
                # The schema check runs as a separate call once connected, not inside aiosqlite's
                # connect: a failed connect makes aiosqlite stop its thread without waiting for
                # it, while a failed call here is followed by a close() that waits.
                try:
                    await conn
                    await _on_thread(conn, self._setup)
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await conn.close()
                    raise
                self._conn = conn
            return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T], trace_id: str | None = None) -> T:
        try:
            return await _on_thread(await self._connection(), fn)
        except sqlite3.Error as exc:
            raise CheckpointError(f"SQLite store {self.path!r}: {exc}", trace_id=trace_id) from exc

    def _setup(self, db: sqlite3.Connection) -> None:
        """Check the schema version, set WAL mode and apply pending migrations (on the thread)."""
        try:
            version = _user_version(db)
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(f"{self.path!r} is not a usable SQLite file: {exc}") from exc
        migrations = _migrations()
        known = migrations[-1][0] if migrations else 0
        if version > known:
            raise CheckpointError(
                f"{self.path!r} has checkpoint schema version {version}, newer than this "
                f"graphexec knows ({known}); upgrade graphexec to open it"
            )
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {self._synchronous}")
        for number, name, script in migrations:
            if number <= version:
                continue
            try:
                with _write(db):
                    # Another process may have migrated the file since we read the version.
                    current = _user_version(db)
                    if current > known:
                        raise CheckpointError(
                            f"{self.path!r} was migrated to schema version {current} by a newer "
                            f"graphexec (this one knows {known})"
                        )
                    if current < number:
                        for statement in _statements(script):
                            db.execute(statement)
                        db.execute(f"PRAGMA user_version = {number}")
            except sqlite3.Error as exc:
                raise CheckpointError(f"migration {name} failed on {self.path!r}: {exc}") from exc

    async def aclose(self) -> None:
        """Fold the WAL back into the file and close; the next call reopens it."""
        async with self._open_lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                with anyio.CancelScope(shield=True):
                    await _on_thread(conn, _wal_checkpoint)
            except sqlite3.Error:
                pass  # another process still reads: its last connection will fold the WAL
            finally:
                with anyio.CancelScope(shield=True):
                    await conn.close()

    # -- writes -------------------------------------------------------------------------------

    async def save(
        self,
        rows: Sequence[StoredCheckpoint],
        run: RunInfo,
        *,
        lease: Lease | None = None,
        release: bool = False,
        decisions_after: int | None = None,
        events: EventBatch | None = None,
    ) -> list[StoredDecision]:
        trace_id = run.trace_id
        params = [_row_params(r) for r in rows]
        bases = sum(r.kind == "base" for r in rows)
        has_base = bases > 0
        run_params = _run_params(run)

        def tx(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            with _write(db):
                t = now()  # after BEGIN IMMEDIATE, which may have waited for another writer
                check_rows(rows, run, db.execute(_LAST_SEQ, (trace_id,)).fetchone()[0])
                if lease is not None:
                    _hold_lease(db, trace_id, lease, t)
                if has_base:
                    # Demote before inserting, so the pages the old bases' snapshots free are
                    # reused by the new base instead of the file growing by a state's size.
                    db.execute(_DEMOTE_ALL, (trace_id,))
                db.executemany(_INSERT_ROW, params)
                if bases > 1:
                    db.execute(_DEMOTE, (trace_id,))  # several bases in one batch
                db.execute(_UPSERT_RUN, run_params)
                if events is not None:
                    db.execute(
                        _INSERT_EVENTS, (trace_id, events.last_id, events.first_id, events.data)
                    )
                if release and lease is not None:
                    db.execute(_RELEASE_LEASE, (trace_id, lease.owner))
                if decisions_after is None:
                    return []
                return db.execute(_DECISIONS_AFTER, (trace_id, decisions_after)).fetchall()

        return [_decision(r) for r in await self._run(tx, trace_id)]

    async def submit_decision(self, trace_id: str, barrier_id: str, decision: Decision) -> int:
        blob = _decision_encoder.encode(decision)

        def tx(db: sqlite3.Connection) -> int:
            with _write(db):
                check_decision_target(_fetch_run(db, trace_id), trace_id, barrier_id)
                cur = db.execute(
                    "INSERT INTO decisions (trace_id, barrier_id, decision, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (trace_id, barrier_id, blob, now()),
                )
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self._run(tx, trace_id)

    async def acquire_lease(self, trace_id: str, lease: Lease) -> RunInfo | None:
        def tx(db: sqlite3.Connection) -> RunInfo | None:
            with _write(db):
                _take_lease(db, trace_id, lease, now())
                return _fetch_run(db, trace_id)

        return await self._run(tx, trace_id)

    async def release_lease(self, trace_id: str, owner: str) -> None:
        def tx(db: sqlite3.Connection) -> None:
            db.execute(_RELEASE_LEASE, (trace_id, owner))

        await self._run(tx, trace_id)

    async def append_events(self, trace_id: str, batch: EventBatch) -> None:
        def tx(db: sqlite3.Connection) -> None:
            with _write(db):
                db.execute(_INSERT_EVENTS, (trace_id, batch.last_id, batch.first_id, batch.data))

        await self._run(tx, trace_id)

    async def events_after(self, trace_id: str, after: int) -> list[EventBatch]:
        def read(db: sqlite3.Connection) -> list[EventBatch]:
            return [
                EventBatch(first_id=r[0], last_id=r[1], data=r[2])
                for r in db.execute(_EVENTS_AFTER, (trace_id, after))
            ]

        return await self._run(read, trace_id)

    async def next_event_segment(self, trace_id: str) -> int:
        def tx(db: sqlite3.Connection) -> int:
            with _write(db):
                segment: int = db.execute(_NEXT_SEGMENT, (trace_id,)).fetchone()[0]
            return segment

        return await self._run(tx, trace_id)

    async def request_cancel(self, trace_id: str) -> bool:
        def tx(db: sqlite3.Connection) -> bool:
            with _write(db):
                t = now()
                row = db.execute(_LEASE_ROW, (trace_id,)).fetchone()
                if row is None or row[1] <= t:
                    return False
                db.execute(
                    "INSERT OR REPLACE INTO cancel_requests (trace_id, requested_at) VALUES (?, ?)",
                    (trace_id, t),
                )
                return True

        return await self._run(tx, trace_id)

    async def take_cancel_request(self, trace_id: str) -> bool:
        def tx(db: sqlite3.Connection) -> bool:
            # Read first: the poll is almost always a miss, and a miss needs no write lock.
            if db.execute(_HAS_CANCEL, (trace_id,)).fetchone() is None:
                return False
            with _write(db):
                return db.execute(_TAKE_CANCEL, (trace_id,)).rowcount > 0

        return await self._run(tx, trace_id)

    async def prune(
        self, *, older_than: float, statuses: Sequence[str] = ("completed",)
    ) -> list[str]:
        wanted = sorted(prunable_statuses(statuses))

        def tx(db: sqlite3.Connection) -> list[str]:
            marks = ",".join("?" * len(wanted))
            with _write(db):
                gone = [
                    r[0]
                    for r in db.execute(
                        f"SELECT trace_id FROM runs WHERE status IN ({marks}) "
                        "AND updated_at < ? ORDER BY updated_at",
                        (*wanted, older_than),
                    )
                ]
                ids = [(t,) for t in gone]
                for table in (
                    "checkpoints",
                    "decisions",
                    "leases",
                    "events",
                    "event_segments",
                    "cancel_requests",
                    "runs",
                ):
                    db.executemany(f"DELETE FROM {table} WHERE trace_id = ?", ids)
            return gone

        return await self._run(tx)

    # -- reads --------------------------------------------------------------------------------

    async def load_chain(self, trace_id: str, seq: int | None = None) -> list[StoredCheckpoint]:
        upto = _MAX_SEQ if seq is None else seq

        def read(db: sqlite3.Connection) -> list[StoredCheckpoint]:
            return [_row(r) for r in db.execute(_LOAD_CHAIN, (trace_id, upto))]

        return await self._run(read, trace_id)

    async def get_run(self, trace_id: str) -> RunInfo | None:
        return await self._run(lambda db: _fetch_run(db, trace_id), trace_id)

    async def runs(
        self, *, status: str | None = None, graph_name: str | None = None, limit: int = 100
    ) -> list[RunInfo]:
        where: list[str] = []
        args: list[Any] = []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if graph_name is not None:
            where.append("graph_name = ?")
            args.append(graph_name)
        # rowid breaks ties in insertion order, as MemoryStore's stable sort does.
        sql = (
            f"SELECT {_RUN_COLUMNS} FROM runs"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY updated_at DESC, rowid LIMIT ?"
        )
        args.append(limit)

        def read(db: sqlite3.Connection) -> list[RunInfo]:
            return [_run_info(r) for r in db.execute(sql, args)]

        return await self._run(read)

    async def history(
        self, trace_id: str, *, limit: int | None = None, before: int | None = None
    ) -> list[CheckpointSummary]:
        # SQLite: LIMIT -1 is no limit; seqs are below 2**63.
        params = (
            trace_id,
            (1 << 63) - 1 if before is None else before,
            -1 if limit is None else limit,
        )

        def read(db: sqlite3.Connection) -> list[CheckpointSummary]:
            return [
                CheckpointSummary(
                    seq=r[0],
                    kind=r[1],
                    step=r[2],
                    next_node=r[3],
                    status=r[4],
                    trigger=r[5],
                    created_at=r[6],
                    bytes=r[7],
                )
                for r in db.execute(_HISTORY, params)
            ][::-1]

        return await self._run(read, trace_id)

    async def decisions_after(self, trace_id: str, cursor: int) -> list[StoredDecision]:
        def read(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return db.execute(_DECISIONS_AFTER, (trace_id, cursor)).fetchall()

        return [_decision(r) for r in await self._run(read, trace_id)]


# -- helpers (run on the connection thread) ----------------------------------------------------


async def _on_thread(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn(sqlite3_connection)`` on aiosqlite's thread: one thread hop for the whole call.

    aiosqlite's public API costs one hop per statement (and per commit); a save would pay five or
    six. ``Connection._execute`` is the queue its public methods use, so calling it directly keeps
    aiosqlite's ordering and thread ownership while a transaction is a single hop. It also means
    a cancelled caller never leaves a transaction half open: the function runs to COMMIT or
    ROLLBACK on the thread regardless.
    """
    result: T = await conn._execute(fn, conn._conn)  # type: ignore[no-untyped-call]
    return result


@contextmanager
def _write(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction; BEGIN IMMEDIATE takes the write lock up front (or waits for it)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _user_version(db: sqlite3.Connection) -> int:
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    return version


def _wal_checkpoint(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def _hold_lease(db: sqlite3.Connection, trace_id: str, lease: Lease, t: float) -> None:
    """Check, on every save, that ``lease`` still holds the trace; renew it only once half its
    ttl has gone by (a renewal is a page write, and most saves come well within the ttl)."""
    row = db.execute(_LEASE_ROW, (trace_id,)).fetchone()
    if row is not None and row[0] == lease.owner and row[1] - t > lease.ttl / 2:
        return
    _take_lease(db, trace_id, lease, t)


def _take_lease(db: sqlite3.Connection, trace_id: str, lease: Lease, t: float) -> None:
    cur = db.execute(_TAKE_LEASE, (trace_id, lease.owner, t + lease.ttl, t))
    if cur.rowcount == 0:
        expires_at: float = db.execute(_LEASE_EXPIRY, (trace_id,)).fetchone()[0]
        raise RunLocked(
            f"run {trace_id!r} is being driven elsewhere; its lease expires in "
            f"{expires_at - t:.1f}s",
            trace_id=trace_id,
            expires_at=expires_at,
        )


def _fetch_run(db: sqlite3.Connection, trace_id: str) -> RunInfo | None:
    r = db.execute(_GET_RUN, (trace_id,)).fetchone()
    return None if r is None else _run_info(r)


def _decision(r: tuple[Any, ...]) -> StoredDecision:
    return StoredDecision(
        id=r[0], barrier_id=r[1], decision=_decision_decoder.decode(r[2]), created_at=r[3]
    )


def _row_params(r: StoredCheckpoint) -> tuple[Any, ...]:
    return (
        r.trace_id,
        r.seq,
        r.kind,
        r.step,
        r.next_node,
        r.status,
        r.trigger,
        r.created_at,
        r.body,
        r.checksum,
        r.snapshot,
        r.snapshot_checksum,
    )


def _row(r: tuple[Any, ...]) -> StoredCheckpoint:
    return StoredCheckpoint(
        trace_id=r[0],
        seq=r[1],
        kind=r[2],
        step=r[3],
        next_node=r[4],
        status=r[5],
        trigger=r[6],
        created_at=r[7],
        body=r[8],
        checksum=r[9],
        snapshot=r[10],
        snapshot_checksum=r[11],
    )


def _run_params(run: RunInfo) -> tuple[Any, ...]:
    return (
        run.trace_id,
        run.graph_name,
        run.graph_hash,
        run.status,
        run.step,
        run.next_node,
        run.last_seq,
        run.created_at,
        run.updated_at,
        run.pending_barrier,
        _json_encoder.encode(run.barrier_counts).decode(),
        _json_encoder.encode(run.barrier_nodes).decode(),
        None if run.parent is None else _json_encoder.encode(run.parent).decode(),
    )


def _run_info(r: tuple[Any, ...]) -> RunInfo:
    return RunInfo(
        trace_id=r[0],
        graph_name=r[1],
        graph_hash=r[2],
        status=r[3],
        step=r[4],
        next_node=r[5],
        last_seq=r[6],
        created_at=r[7],
        updated_at=r[8],
        pending_barrier=r[9],
        barrier_counts=_counts_decoder.decode(r[10]),
        barrier_nodes=_nodes_decoder.decode(r[11]),
        parent=None if r[12] is None else _parent_decoder.decode(r[12]),
    )


# -- schema files ------------------------------------------------------------------------------


def _schema_dir() -> Traversable:
    """The SQL files: inside the wheel as graphexec/_schema, else ./checkpoints of a checkout."""
    shipped = importlib.resources.files("graphexec") / "_schema" / "sqlite"
    if shipped.is_dir():
        return shipped
    return Path(__file__).resolve().parents[2] / "checkpoints" / "sqlite"


@cache
def _migrations() -> list[tuple[int, str, str]]:
    """``(number, file name, SQL)`` of every ``NNN_*.sql`` file, in order."""
    found: dict[int, tuple[int, str, str]] = {}
    folder = _schema_dir()
    if not folder.is_dir():
        raise CheckpointError(f"SQLite schema files not found (looked in {folder})")
    for entry in folder.iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m is None:
            continue
        number = int(m.group(1))
        if number in found:
            raise CheckpointError(
                f"two SQLite migrations numbered {number}: {found[number][1]}, {entry.name}"
            )
        found[number] = (number, entry.name, entry.read_text(encoding="utf-8"))
    return [found[n] for n in sorted(found)]


def _statements(script: str) -> Iterable[str]:
    """Split a script into statements (``executescript`` would commit our transaction)."""
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if _strip_comments(buffer).strip(" \t\r\n;"):
                yield buffer
            buffer = ""
    if _strip_comments(buffer).strip(" \t\r\n;"):
        raise CheckpointError(f"incomplete SQL statement at the end of a migration: {buffer!r}")


def _strip_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
