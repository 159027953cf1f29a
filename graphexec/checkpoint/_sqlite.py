"""SQLiteStore: the CheckpointStore contract in one SQLite file, shared by tasks and processes.

The file is opened lazily (created readable by its owner only, WAL mode, ``busy_timeout``), its
schema is created or migrated from the versioned SQL files in ``checkpoints/sqlite``
(``PRAGMA user_version`` holds the version), and every operation runs as one function inside one
transaction, on the event loop's thread or a worker thread (``_sqlite_db``: the fast and the
portable path). Writers use ``BEGIN IMMEDIATE``, so several processes can share a file.
"""

from __future__ import annotations

import os
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import anyio

from .._decisions import Decision
from ..exceptions import CheckpointError, GraphError
from ._base import (
    StoreBase,
    check_decision_target,
    check_rows,
    check_status,
    prunable_statuses,
)
from ._claims import (
    CLAIMABLE_STATUSES,
    Liveness,
    check_claim_args,
    claim,
    claimable_now,
    needs_driver,
)
from ._hints import WORK
from ._leases import LeaseRow, check_append, check_write, grant, this_process
from ._record import (
    CheckpointSummary,
    Claim,
    EventBatch,
    Lease,
    LeaseGrant,
    RunInfo,
    StoredCheckpoint,
    StoredDecision,
    now,
)
from ._sql import (
    MAX_SEQ,
    RUN_COLUMNS,
    decision_blob,
    lease_row,
    migrations,
    run_info,
    run_params,
    stored_decision,
)
from ._sqlite_db import Busy, CommitPath, Database, create_file, is_busy, prepare, retry_busy

__all__ = ("SQLiteStore",)

T = TypeVar("T")

_TX_OVERHEAD = 3 * 4096
"""Bytes a save writes besides its blobs: the runs row's, the lease's and an index page."""


# -- SQL --------------------------------------------------------------------------------------

_ROW_COLUMNS = (
    "trace_id, seq, kind, step, next_node, status, trigger, created_at, "
    "body, checksum, snapshot, snapshot_checksum, body_encoding"
)
_INSERT_ROW = f"INSERT INTO checkpoints ({_ROW_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
# Bodies are compressed (body_encoding 1) from this size when that saves an eighth or more.
_COMPRESS_FROM = 512
_RAW, _ZLIB = 0, 1
# What a save checks, in one statement: the trace's last seq and who holds its lease.
_SAVE_CHECKS = (
    "SELECT (SELECT max(seq) FROM checkpoints WHERE trace_id = ?1), l.owner, l.token, "
    "l.expires_at, l.host, l.pid, l.started "
    "FROM (SELECT 1) LEFT JOIN leases AS l ON l.trace_id = ?1"
)
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
_UPSERT_RUN = (
    f"INSERT INTO runs ({RUN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (trace_id) DO UPDATE SET graph_name = excluded.graph_name, "
    "graph_hash = excluded.graph_hash, status = excluded.status, step = excluded.step, "
    "next_node = excluded.next_node, last_seq = excluded.last_seq, "
    "created_at = excluded.created_at, updated_at = excluded.updated_at, "
    "pending_barrier = excluded.pending_barrier, barrier_counts = excluded.barrier_counts, "
    "barrier_nodes = excluded.barrier_nodes, parent = excluded.parent, "
    "ready_at = excluded.ready_at"
)
_SET_READY = "UPDATE runs SET ready_at = ? WHERE trace_id = ?"
# The runs row with who holds its lease (LEFT JOIN: a run nobody drives has no holder).
_RUN_SELECT = (
    "SELECT "
    + ", ".join(f"runs.{c.strip()}" for c in RUN_COLUMNS.split(","))
    + ", leases.owner, leases.token, leases.expires_at, leases.host, leases.pid, leases.started"
    " FROM runs LEFT JOIN leases ON leases.trace_id = runs.trace_id"
)
_GET_RUN = f"{_RUN_SELECT} WHERE runs.trace_id = ?"
# The runs that may need a driver (the clear cases in SQL; _claims.needs_driver decides, as a
# holder on this host may be gone), oldest ready first. No index on status: a scan of the
# runs table, first outside the write lock (an idle claimer never takes it).
_CLAIM_CANDIDATES = (
    f"{_RUN_SELECT} WHERE runs.status IN ({', '.join(repr(s) for s in CLAIMABLE_STATUSES)}) "
    "AND (runs.status <> 'waiting' OR runs.ready_at <= ?1 OR coalesce(leases.owner, '') <> '') "
    "AND (leases.owner IS NULL OR leases.owner = '' OR leases.expires_at <= ?1 "
    "OR leases.host = ?2) {graphs}"
    "ORDER BY coalesce(runs.ready_at, runs.updated_at), runs.rowid"
)
_PUT_LEASE = (
    "INSERT INTO leases (trace_id, owner, expires_at, token, host, pid, started) "
    "VALUES (?,?,?,?,?,?,?) ON CONFLICT (trace_id) DO UPDATE SET owner = excluded.owner, "
    "expires_at = excluded.expires_at, token = excluded.token, host = excluded.host, "
    "pid = excluded.pid, started = excluded.started"
)
_RENEW_LEASE = "UPDATE leases SET expires_at = ? WHERE trace_id = ? AND owner = ? AND token = ?"
# Releasing keeps the row (and its token, so the next owner's grows).
_RELEASE_LEASE = "UPDATE leases SET owner = '', expires_at = 0 WHERE trace_id = ? AND owner = ?"
_HAS_DECISION = (
    "SELECT 1 FROM decisions WHERE trace_id = ? AND barrier_id = ? AND refused IS NULL LIMIT 1"
)
_REFUSE_DECISION = "UPDATE decisions SET refused = ? WHERE trace_id = ? AND id = ?"
_INSERT_EVENTS = "INSERT INTO events (trace_id, last_id, first_id, data) VALUES (?,?,?,?)"
# A checkpoint row that also carries the batch of events written with it.
_INSERT_ROW_EVENTS = (
    f"INSERT INTO checkpoints ({_ROW_COLUMNS}, ev_first, ev_last, events) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_EVENTS_AFTER = (
    "SELECT first_id, last_id, data FROM events WHERE trace_id = ?1 AND last_id > ?2 "
    "UNION ALL SELECT ev_first, ev_last, events FROM checkpoints "
    "WHERE trace_id = ?1 AND ev_last > ?2 ORDER BY 2"
)
_NEXT_SEGMENT = (
    "INSERT INTO event_segments (trace_id, segment) VALUES (?, 1) "
    "ON CONFLICT (trace_id) DO UPDATE SET segment = segment + 1 RETURNING segment"
)
_GET_LEASE = "SELECT owner, token, expires_at, host, pid, started FROM leases WHERE trace_id = ?"
_HAS_CANCEL = "SELECT 1 FROM cancel_requests WHERE trace_id = ?"
_TAKE_CANCEL = "DELETE FROM cancel_requests WHERE trace_id = ?"
_DECISIONS_AFTER = (
    "SELECT id, barrier_id, decision, created_at FROM decisions "
    "WHERE trace_id = ? AND id > ? ORDER BY id"
)


class SQLiteStore(StoreBase):
    """Checkpoints, runs index, decision inbox and leases in one SQLite file.

    One store object serves any number of runs in a process: one connection, one transaction
    at a time. Several processes may open the same file (WAL mode, ``busy_timeout``,
    ``BEGIN IMMEDIATE`` for writes; several opening a new file at once wait for each other).
    The file is opened on first use, and again after :meth:`aclose`.

    Args:
        path: The database file; created with its schema if missing.
        synchronous: ``"NORMAL"`` (default) loses at most the last commits on power loss, never
            consistency; ``"FULL"`` syncs the WAL on every commit.
        busy_timeout: Seconds to wait for another writer before giving up with a CheckpointError.
        file_mode: Permissions of a file the store creates (and of its -wal and -shm files,
            which SQLite gives the database's): owner only by default. None: SQLite's default
            (0644 less the umask). An existing file keeps its permissions.
        commit_path: Where transactions run, decided when the store opens. ``"fast"``: on the
            event loop's thread whenever one can start without waiting (no other connection
            holds the write lock, no WAL checkpoint due), else on a worker thread.
            ``"portable"``: always on a worker thread (``anyio.to_thread``). ``"auto"``
            (default): fast with ``synchronous="NORMAL"``, where a commit writes no fsync;
            portable with ``"FULL"``, where every commit waits for the disk. Both work on
            every anyio backend; :attr:`commit_path_used` tells which one an open store uses.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 5.0,
        file_mode: int | None = 0o600,
        commit_path: CommitPath = "auto",
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        if commit_path not in ("auto", "fast", "portable"):
            raise ValueError(
                f"commit_path must be 'auto', 'fast' or 'portable', not {commit_path!r}"
            )
        if file_mode is not None and not 0 <= file_mode <= 0o777:
            raise ValueError(f"file_mode must be permission bits (0 to 0o777), not {file_mode!r}")
        self.path = os.fspath(path)
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._file_mode = file_mode
        self._commit_path = commit_path
        self._db: Database | None = None
        self._open_lock = anyio.Lock()

    @property
    def commit_path_used(self) -> Literal["fast", "portable"] | None:
        """The path the open store runs transactions on; None while it is closed."""
        if self._db is None:
            return None
        return "fast" if self._db.fast else "portable"

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- connection ---------------------------------------------------------------------------

    async def _database(self) -> Database:
        db = self._db
        if db is not None:
            return db
        async with self._open_lock:
            if self._db is None:
                fast = self._commit_path == "fast" or (
                    self._commit_path == "auto" and self._synchronous == "NORMAL"
                )
                # On a worker thread: creating the file and the schema may wait for another
                # process. Not abandoned on cancel: the connection is closed or handed over.
                conn = await anyio.to_thread.run_sync(self._open, fast)
                self._db = Database(conn, fast=fast, busy_ms=round(self._busy_timeout * 1000))
            return self._db

    def _open(self, fast: bool) -> sqlite3.Connection:
        try:
            create_file(self.path, self._file_mode)
        except OSError as exc:  # a missing folder, no permission: say so as a graphexec error
            raise CheckpointError(f"cannot create SQLite file {self.path!r}: {exc}") from exc
        # isolation_level=None: no implicit BEGIN; every transaction is explicit.
        # timeout= is SQLite's busy timeout: how long to wait for another writer.
        # check_same_thread=False: the connection moves between the loop's and worker threads;
        # Database's lock keeps it to one at a time.
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=self._busy_timeout, check_same_thread=False
        )
        try:
            retry_busy(lambda: self._setup(conn), self._busy_timeout)
            prepare(conn, fast=fast)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _run(
        self, fn: Callable[[sqlite3.Connection], T], trace_id: str | None = None, writes: int = 0
    ) -> T:
        try:
            return await (self._db or await self._database()).run(fn, writes)
        except GraphError:
            raise
        except sqlite3.Error as exc:
            raise CheckpointError(f"SQLite store {self.path!r}: {exc}", trace_id=trace_id) from exc
        except UnicodeEncodeError as exc:  # a str argument SQLite cannot store as UTF-8
            raise CheckpointError(
                f"SQLite store {self.path!r}: a value is not encodable as UTF-8 ({exc})"
            ) from exc
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            # Otherwise only a damaged file gets here: a column that no longer decodes (JSON
            # or msgpack) or holds the wrong type. Nothing read may surface as anything but a
            # graphexec error.
            raise CheckpointError(
                f"SQLite store {self.path!r} is damaged: {exc!r}", trace_id=trace_id
            ) from exc

    def _setup(self, db: sqlite3.Connection) -> None:
        """Check the schema version, set WAL mode and apply pending migrations (on the thread)."""
        try:
            version = _user_version(db)
        except sqlite3.DatabaseError as exc:
            if is_busy(exc):
                raise  # another process is creating the file: retried
            raise CheckpointError(f"{self.path!r} is not a usable SQLite file: {exc}") from exc
        migrations = _migrations()
        known = migrations[-1][0] if migrations else 0
        if version > known:
            raise CheckpointError(
                f"{self.path!r} has checkpoint schema version {version}, newer than this "
                f"graphexec knows ({known}); upgrade graphexec to open it"
            )
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            # SQLite keeps the old mode when it cannot switch now: treated as busy (retried),
            # never used in another journal mode than the other processes on the file. An
            # in-memory database has no WAL ("memory") and no other process.
            if mode.lower() not in ("wal", "memory"):
                raise Busy(f"{self.path!r} could not be switched to WAL mode (still {mode})")
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
                if is_busy(exc):
                    raise  # another process holds the file: retried (the migration rolled back)
                raise CheckpointError(f"migration {name} failed on {self.path!r}: {exc}") from exc

    async def aclose(self) -> None:
        """Fold the WAL back into the file and close; the next call reopens it."""
        async with self._open_lock:
            db, self._db = self._db, None
            if db is not None:
                await db.close()

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
        run_row = run_params(run)

        ready = False

        def tx(db: sqlite3.Connection) -> list[StoredDecision]:
            nonlocal ready
            with _write(db):
                t = now()  # after BEGIN IMMEDIATE, which may have waited for another writer
                last_seq, *held = db.execute(_SAVE_CHECKS, (trace_id,)).fetchone()
                # The lease first: a driver whose lease was taken over learns that (LeaseLost),
                # not that its seqs no longer follow the new owner's.
                if lease is not None:
                    _hold_lease(db, trace_id, lease, t, _lease_of(held))
                check_rows(rows, run, last_seq)
                if has_base:
                    # Demote before inserting, so the pages the old bases' snapshots free are
                    # reused by the new base instead of the file growing by a state's size.
                    db.execute(_DEMOTE_ALL, (trace_id,))
                if events is not None:
                    # The batch rides in the last row: no other table is written.
                    if len(params) > 1:
                        db.executemany(_INSERT_ROW, params[:-1])
                    db.execute(
                        _INSERT_ROW_EVENTS,
                        (*params[-1], events.first_id, events.last_id, events.data),
                    )
                elif len(params) == 1:
                    db.execute(_INSERT_ROW, params[0])  # the usual case; skips executemany's setup
                else:
                    db.executemany(_INSERT_ROW, params)
                if bases > 1:
                    db.execute(_DEMOTE, (trace_id,))  # several bases in one batch
                db.execute(_UPSERT_RUN, run_row)
                if release and lease is not None:
                    db.execute(_RELEASE_LEASE, (trace_id, lease.owner))
                ready = claimable_now(run, t)
                if decisions_after is None:
                    return []
                found = db.execute(_DECISIONS_AFTER, (trace_id, decisions_after)).fetchall()
                if found and run.status == "waiting":
                    # Decisions came before the run parked: it is ready at once.
                    db.execute(_SET_READY, (t, trace_id))
                    ready = True
            return [stored_decision(r) for r in found]

        writes = _TX_OVERHEAD + sum(r.size for r in rows)
        found = await self._run(tx, trace_id, writes)
        if ready:
            self.hints.notify(WORK)
        return found

    async def submit_decision(
        self,
        trace_id: str,
        barrier_id: str,
        decision: Decision,
        *,
        every_occurrence: bool = False,
    ) -> int:
        blob = decision_blob(trace_id, barrier_id, decision)

        woke = False

        def tx(db: sqlite3.Connection) -> int:
            nonlocal woke
            with _write(db):
                decided = _Decided(db, trace_id)
                run = _fetch_run(db, trace_id)
                key = check_decision_target(
                    run,
                    trace_id,
                    barrier_id,
                    decision,
                    every_occurrence=every_occurrence,
                    decided=decided,
                )
                t = now()
                cur = db.execute(
                    "INSERT INTO decisions (trace_id, barrier_id, decision, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (trace_id, key, blob, t),
                )
                if run is not None and run.status == "waiting":
                    # Its driver can go on now: any worker may (a spurious wake-up parks again).
                    db.execute(_SET_READY, (t, trace_id))
                    woke = True
            assert cur.lastrowid is not None
            return cur.lastrowid

        decision_id = await self._run(tx, trace_id, _TX_OVERHEAD)
        if woke:
            self.hints.notify(WORK)
        return decision_id

    async def refuse_decision(self, trace_id: str, decision_id: int, reason: str) -> None:
        def tx(db: sqlite3.Connection) -> None:
            db.execute(_REFUSE_DECISION, (reason, trace_id, decision_id))

        await self._run(tx, trace_id, _TX_OVERHEAD)

    async def acquire_lease(
        self,
        trace_id: str,
        lease: Lease,
        *,
        take_over: bool = False,
        expect_seq: int | None = None,
    ) -> LeaseGrant:
        def tx(db: sqlite3.Connection) -> LeaseGrant:
            with _write(db):
                t = now()
                last_seq, *held = db.execute(_SAVE_CHECKS, (trace_id,)).fetchone()
                new = grant(
                    _lease_of(held),
                    lease,
                    t,
                    trace_id=trace_id,
                    take_over=take_over,
                    last_seq=last_seq,
                    expect_seq=expect_seq,
                )
                _put_lease(db, trace_id, new)
                return LeaseGrant(token=new.token, run=_fetch_run(db, trace_id))

        return await self._run(tx, trace_id, _TX_OVERHEAD)

    async def claim_runs(self, graph_names: Sequence[str], leases: Sequence[Lease]) -> list[Claim]:
        check_claim_args(graph_names, leases)
        if not leases:
            return []
        names = list(graph_names)
        graphs = f"AND runs.graph_name IN ({','.join('?' * len(names))}) " if names else ""
        sql = _CLAIM_CANDIDATES.format(graphs=graphs)
        host = this_process()[0]

        def candidates(
            db: sqlite3.Connection, t: float, limit: int
        ) -> list[tuple[RunInfo, LeaseRow | None]]:
            found: list[tuple[RunInfo, LeaseRow | None]] = []
            alive = Liveness()
            cur = db.execute(sql, (t, host, *names))
            try:
                for r in cur:
                    run, held = run_info(r), _lease_of(r[14:])
                    if needs_driver(run.status, run.ready_at, held, t, alive):
                        found.append((run, held))
                        if len(found) == limit:
                            break
            finally:
                cur.close()
            return found

        def tx(db: sqlite3.Connection) -> list[Claim]:
            # A read first, outside the write lock: an idle claimer (the usual poll) never
            # takes it, so it never holds up the runs' saves.
            if not candidates(db, now(), 1):
                return []
            claims: list[Claim] = []
            with _write(db):
                t = now()
                for (run, held), lease in zip(candidates(db, t, len(leases)), leases, strict=False):
                    done, new = claim(run, held, lease, t)
                    _put_lease(db, run.trace_id, new)
                    claims.append(done)
                db.executemany(_SET_READY, [(None, c.trace_id) for c in claims])
            return claims

        return await self._run(tx, writes=_TX_OVERHEAD)

    async def release_lease(self, trace_id: str, owner: str) -> None:
        def tx(db: sqlite3.Connection) -> None:
            db.execute(_RELEASE_LEASE, (trace_id, owner))

        await self._run(tx, trace_id, _TX_OVERHEAD)

    async def append_events(self, trace_id: str, batch: EventBatch, *, lease: Lease) -> None:
        def tx(db: sqlite3.Connection) -> None:
            with _write(db):
                # Fenced like a save (check_append): a driver whose lease was taken over
                # records nothing.
                check_append(
                    _lease_of(db.execute(_GET_LEASE, (trace_id,)).fetchone()),
                    lease,
                    trace_id=trace_id,
                )
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
                row = _lease_of(db.execute(_GET_LEASE, (trace_id,)).fetchone())
                if row is None or not row.live(t):
                    return False  # released, parked, expired, or its owner's process is gone
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

        return await self._run(tx, writes=_TX_OVERHEAD)

    # -- reads --------------------------------------------------------------------------------

    async def load_chain(self, trace_id: str, seq: int | None = None) -> list[StoredCheckpoint]:
        upto = MAX_SEQ if seq is None else seq

        def read(db: sqlite3.Connection) -> list[StoredCheckpoint]:
            return [_row(r) for r in db.execute(_LOAD_CHAIN, (trace_id, upto))]

        return await self._run(read, trace_id)

    async def get_run(self, trace_id: str) -> RunInfo | None:
        return await self._run(lambda db: _fetch_run(db, trace_id), trace_id)

    async def runs(
        self, *, status: str | None = None, graph_name: str | None = None, limit: int = 100
    ) -> list[RunInfo]:
        check_status(status)
        where: list[str] = []
        args: list[Any] = []
        if status is not None:
            where.append("runs.status = ?")
            args.append(status)
        if graph_name is not None:
            where.append("runs.graph_name = ?")
            args.append(graph_name)
        # rowid breaks ties in insertion order, as MemoryStore's stable sort does.
        sql = (
            _RUN_SELECT
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY runs.updated_at DESC, runs.rowid LIMIT ?"
        )
        args.append(limit)

        def read(db: sqlite3.Connection) -> list[RunInfo]:
            return [run_info(r) for r in db.execute(sql, args)]

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
        def read(db: sqlite3.Connection) -> list[StoredDecision]:
            return [stored_decision(r) for r in db.execute(_DECISIONS_AFTER, (trace_id, cursor))]

        return await self._run(read, trace_id)


# -- helpers (run where the transaction runs) ----------------------------------------------------


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


def _lease_of(r: Sequence[Any] | None) -> LeaseRow | None:
    """``(owner, token, expires_at, host, pid, started)`` as a LeaseRow (None: no row)."""
    return None if r is None or r[0] is None else lease_row(r)


def _put_lease(db: sqlite3.Connection, trace_id: str, row: LeaseRow) -> None:
    db.execute(
        _PUT_LEASE,
        (trace_id, row.owner, row.expires_at, row.token, row.host, row.pid, row.started),
    )


def _hold_lease(
    db: sqlite3.Connection, trace_id: str, lease: Lease, t: float, row: LeaseRow | None
) -> None:
    """The check every save makes (check_write: the owner and fencing token must still hold
    the lease, else LeaseLost and nothing is written); renews it once half its ttl has gone by
    (a renewal is a page write, and most saves come well within the ttl). A writer without a
    token (0: it never acquired) takes the lease as acquire_lease would."""
    if lease.token == 0:
        _put_lease(db, trace_id, grant(row, lease, t, trace_id=trace_id))
    elif check_write(row, lease, t, trace_id=trace_id):
        db.execute(_RENEW_LEASE, (t + lease.ttl, trace_id, lease.owner, lease.token))


def _fetch_run(db: sqlite3.Connection, trace_id: str) -> RunInfo | None:
    r = db.execute(_GET_RUN, (trace_id,)).fetchone()
    return None if r is None else run_info(r)


class _Decided:
    """``barrier_id in decided``: the inbox already holds an unrefused decision for it (one
    indexed lookup, only for the id being submitted)."""

    def __init__(self, db: sqlite3.Connection, trace_id: str) -> None:
        self._db = db
        self._trace_id = trace_id

    def __contains__(self, barrier_id: object) -> bool:
        row = self._db.execute(_HAS_DECISION, (self._trace_id, barrier_id)).fetchone()
        return row is not None


def _row_params(r: StoredCheckpoint) -> tuple[Any, ...]:
    body, encoding = r.body, _RAW
    if len(body) >= _COMPRESS_FROM:
        packed = zlib.compress(body, 1)  # level 1: a kilobyte in ~15 us; 6 saves ~1% more
        if len(packed) <= len(body) - len(body) // 8:
            body, encoding = packed, _ZLIB
    return (
        r.trace_id,
        r.seq,
        r.kind,
        r.step,
        r.next_node,
        r.status,
        r.trigger,
        r.created_at,
        body,
        r.checksum,
        r.snapshot,
        r.snapshot_checksum,
        encoding,
    )


def _row(r: tuple[Any, ...]) -> StoredCheckpoint:
    body = r[8]
    if r[12] != _RAW:
        try:
            if r[12] != _ZLIB:
                raise ValueError(f"unknown body encoding {r[12]!r}")
            body = zlib.decompress(body)
        except (zlib.error, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"checkpoint body is damaged (cannot be inflated: {exc})", trace_id=r[0], seq=r[1]
            ) from exc
    return StoredCheckpoint(
        trace_id=r[0],
        seq=r[1],
        kind=r[2],
        step=r[3],
        next_node=r[4],
        status=r[5],
        trigger=r[6],
        created_at=r[7],
        body=body,
        checksum=r[9],
        snapshot=r[10],
        snapshot_checksum=r[11],
    )


def _migrations() -> list[tuple[int, str, str]]:
    """``(number, file name, SQL)`` of every ``checkpoints/sqlite/NNN_*.sql``, in order."""
    return migrations("sqlite")


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
