"""PostgresStore: the CheckpointStore contract on PostgreSQL, shared by many processes and hosts.

Built on psycopg 3 with a psycopg-pool connection pool (the ``postgres`` extra). Nothing is
kept on a connection between transactions: no prepared statements (``prepare_threshold=None``),
no ``SET``, no session advisory locks, no ``LISTEN`` on pooled connections. So the store works
behind PgBouncer in transaction mode, where each transaction may run on another server
connection. Wake-up hints from other processes come through one ``LISTEN`` connection of the
store object's own, outside the pool (``_pg_listen.py``; ``listen_dsn=`` behind PgBouncer).

Every frequent write is one statement, a function of the schema (a save with its events, a
lease grant, an event append, a cancel request: ``checkpoints/postgres/003_*.sql``): a round
trip costs more than what these do on the server.

The tables live in one Postgres schema (``schema="graphexec"`` by default), named in every
statement rather than through ``search_path`` (which would be session state). They are created
and migrated from the versioned files under ``checkpoints/postgres`` on first use, in one
transaction holding a transaction-scoped advisory lock, so processes opening a new database at
the same moment apply each migration once. Rows hold the same bytes as SQLite's
(``checkpoints/FORMAT.md``); the columns and their mapping are shared with it (``_sql.py``).
"""

from __future__ import annotations

import asyncio
import re
import select
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from typing import Any, Literal

import anyio
import msgspec
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from .._decisions import Decision
from .._log import get_logger
from .._values import check_trace_id
from ..exceptions import CheckpointError, GraphError
from ._base import (
    StoreBase,
    check_decision_target,
    check_rows,
    check_status,
    prunable_statuses,
)
from ._claims import CLAIMABLE_STATUSES, Liveness, check_claim_args, claim, needs_driver
from ._hints import events_topic
from ._leases import LeaseRow, check_append, check_write, grant, this_process
from ._pg_listen import Listener, channel
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
    ROW_COLUMNS,
    RUN_COLUMNS,
    decision_blob,
    lease_row,
    migrations,
    row_params,
    run_info,
    run_params,
    run_select,
    stored_checkpoint,
    stored_decision,
)

__all__ = ("PostgresStore",)

_detail_decoder = msgspec.json.Decoder(
    tuple[str | None, int | None, float | None, str | None, int | None, str | None, float]
)

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_LEASE_LOST = "GX003"
"""SQLSTATE raised by ``save_checkpoints`` and ``append_events`` when the lease no longer holds the writer's owner and
fencing token (DETAIL: the lease row and the database clock, as a JSON array)."""
_EVENTS_PREFIX = events_topic("")
WATCH_TTL = 30.0
"""Seconds an event watcher row lives after the wait that last extended it (at least three
times that wait): a tail that went away stops the trace's NOTIFYs within this."""
_WATCH_MARGIN = 5.0
"""A watcher row is extended when it would expire less than this after the current wait."""
_SEQ_BEHIND = "GX002"
"""SQLSTATE raised by ``save_checkpoints`` when the rows do not follow the trace's last seq."""


_CLAIMABLE = (
    f"runs.status IN ({', '.join(repr(s) for s in CLAIMABLE_STATUSES)}) "
    "AND (runs.status <> 'waiting' OR runs.ready_at <= t.now OR leases.owner <> '') "
    "AND (cardinality(%(graphs)s::text[]) = 0 OR runs.graph_name = ANY(%(graphs)s::text[]))"
)
"""What a run that may need a driver looks like in SQL (``_claims.needs_driver``, less the
liveness of the lease's holder)."""


def _gone(leases: str) -> str:
    """A lease held by a process of this host known to be gone (found by an earlier claim)."""
    return (
        f"({leases}.host = %(host)s AND ({leases}.pid, {leases}.started) IN "
        "(SELECT * FROM unnest(%(gone_pids)s::bigint[], %(gone_starteds)s::text[])))"
    )


def _claim_sql(s: str) -> str:
    """claim_runs in one statement: lock the runs that need a driver whose lease is free or
    expired (``FOR UPDATE OF runs, leases SKIP LOCKED``: a claimer never waits, so it is never
    part of a deadlock), oldest ready first; grant the i-th the i-th lease (token + 1, expiry
    on the database clock); clear their ready_at. The candidates come from indexes only:
    queued, interrupted and running runs (``runs_status``), runs whose ready_at passed
    (``runs_ready``: parked runs waiting for a person are never read) and leases held but
    expired or held by processes of this host known to be gone (``leases_held``), all of them
    in one order. Rows with ``i = -1`` name the processes of this host that hold leases, for
    Python to check which are gone: the next claim takes their runs in that order, this one
    in a second step if it has leases left (``_gone_holders_sql``)."""
    cols = ", ".join(f"runs.{c}" for c in RUN_COLUMNS.split(", "))
    lease_cols = "owner, token, expires_at, host, pid, started"
    return (
        "WITH t AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS now), "
        "c AS (SELECT runs.trace_id, runs.id, coalesce(runs.ready_at, runs.updated_at) AS k "
        f"FROM {s}.runs AS runs JOIN {s}.leases AS leases ON leases.trace_id = runs.trace_id "
        "CROSS JOIN t WHERE runs.trace_id IN ("
        f"SELECT trace_id FROM {s}.runs WHERE status IN ('queued', 'interrupted', 'running') "
        f"UNION ALL SELECT trace_id FROM {s}.runs, t WHERE ready_at <= t.now "
        f"UNION ALL SELECT h.trace_id FROM {s}.leases AS h, t WHERE h.owner <> '' "
        f"AND (h.expires_at <= t.now OR {_gone('h')})) AND {_CLAIMABLE} "
        f"AND (leases.owner = '' OR leases.expires_at <= t.now OR {_gone('leases')}) "
        "ORDER BY k, runs.id LIMIT %(n)s FOR UPDATE OF runs, leases SKIP LOCKED), "
        "w AS (SELECT o.trace_id, o.i, a.owner, a.ttl, a.host, a.pid, a.started FROM "
        "(SELECT c.trace_id, row_number() OVER (ORDER BY c.k, c.id) AS i FROM c) AS o "
        "JOIN unnest(%(owners)s::text[], %(ttls)s::float8[], %(hosts)s::text[], "
        "%(pids)s::bigint[], %(starteds)s::text[]) "
        "WITH ORDINALITY AS a(owner, ttl, host, pid, started, i) ON a.i = o.i), "
        f"g AS (UPDATE {s}.leases AS l SET owner = w.owner, token = l.token + 1, "
        "expires_at = t.now + w.ttl, host = w.host, pid = w.pid, started = w.started "
        "FROM w, t WHERE l.trace_id = w.trace_id RETURNING l.trace_id, "
        f"{', '.join(f'l.{c}' for c in lease_cols.split(', '))}), "
        f"r AS (UPDATE {s}.runs AS runs SET ready_at = NULL FROM g "
        f"WHERE runs.trace_id = g.trace_id RETURNING {cols}) "
        f"SELECT w.i, r.*, {', '.join(f'g.{c}' for c in lease_cols.split(', '))} "
        "FROM r JOIN g ON g.trace_id = r.trace_id JOIN w ON w.trace_id = r.trace_id "
        f"UNION ALL SELECT -1, {', '.join(['NULL'] * len(RUN_COLUMNS.split(', ')))}, "
        "NULL, NULL, NULL, h.host, h.pid, h.started FROM (SELECT DISTINCT leases.host, "
        f"leases.pid, leases.started FROM {s}.leases AS leases CROSS JOIN t "
        "WHERE leases.owner <> '' AND leases.host = %(host)s AND leases.pid <> %(pid)s "
        "AND leases.expires_at > t.now) AS h"
    )


def _gone_holders_sql(s: str) -> str:
    """The runs that need a driver held by processes of this host found gone (pids and start
    times given), oldest ready first: claimed one by one by ``_claim_one``."""
    return (
        f"SELECT runs.trace_id FROM {s}.leases AS leases JOIN {s}.runs AS runs "
        f"ON runs.trace_id = leases.trace_id CROSS JOIN "
        "(SELECT extract(epoch FROM clock_timestamp())::float8 AS now) AS t "
        f"WHERE leases.owner <> '' AND leases.host = %(host)s AND (leases.pid, leases.started) "
        "IN (SELECT * FROM unnest(%(pids)s::bigint[], %(starteds)s::text[])) "
        f"AND {_CLAIMABLE} ORDER BY coalesce(runs.ready_at, runs.updated_at), runs.id "
        "LIMIT %(n)s"
    )


class _Connection(psycopg.AsyncConnection[Any]):
    """A pooled connection that keeps one cursor for the store's statements: a cursor running
    the statement it ran last reuses how it adapted the parameters' types (a save's eleven
    array parameters cost psycopg about 60 us that way, 155 us afresh)."""

    _kept: psycopg.AsyncCursor[Any] | None = None

    def kept_cursor(self) -> psycopg.AsyncCursor[Any]:
        cur = self._kept
        if cur is None or cur.closed:
            cur = self._kept = self.cursor()
        return cur


class _Sql:
    """The store's statements, with its schema's name in every table reference."""

    def __init__(self, s: str) -> None:
        # A save is one call of the schema's save_checkpoints function: one round trip, one
        # transaction, its event batch included (a network round trip costs more than the rest
        # of a save). Likewise a lease grant, an event append and a cancel request (003).
        self.save = (
            f"SELECT * FROM {s}.save_checkpoints(%s, %s::bigint[], %s::text[], %s::bigint[], "
            "%s::text[], %s::text[], %s::text[], %s::float8[], %s::bytea[], %s::bigint[], "
            "%s::bytea[], %s::bigint[], "
            + ", ".join(["%s"] * 13)
            + ", %s::text, %s::bigint, %s::float8, %s::text, %s, %s::bigint, "
            "%s::bigint, %s::bigint, %s::bytea)"
        )
        self.acquire = (
            f"SELECT * FROM {s}.acquire_lease(%s, %s, %s::bigint, %s::float8, %s, %s::bigint, "
            "%s, %s, %s::bigint, %s::text, %s::bigint)"
        )
        self.append = (
            f"SELECT {s}.append_events(%s, %s, %s::bigint, %s::bigint, %s::bigint, %s::bytea)"
        )
        self.cancel = (
            f"SELECT * FROM {s}.request_cancel(%s, %s, %s::bigint, %s::text, %s::bigint, "
            "%s::float8)"
        )
        self.load_chain = (
            f"SELECT {ROW_COLUMNS} FROM {s}.checkpoints WHERE trace_id = %(t)s "
            "AND seq <= %(u)s AND seq >= (SELECT max(seq) FROM "
            f"{s}.checkpoints WHERE trace_id = %(t)s AND kind = 'base' AND seq <= %(u)s) "
            "ORDER BY seq"
        )
        # A page: the newest ``limit`` below ``before`` (reversed to oldest first by the caller).
        self.history = (
            "SELECT seq, kind, step, next_node, status, trigger, created_at, "
            "octet_length(body) + coalesce(octet_length(snapshot), 0) "
            f"FROM {s}.checkpoints WHERE trace_id = %s AND seq < %s ORDER BY seq DESC LIMIT %s"
        )
        cols = ", ".join(f"runs.{c}" for c in RUN_COLUMNS.split(", "))
        self.runs = run_select(f"{s}.runs", f"{s}.leases")
        self.get_run = self.runs + " WHERE runs.trace_id = %s"
        self.get_run_locked = f"SELECT {RUN_COLUMNS} FROM {s}.runs WHERE trace_id = %s FOR UPDATE"
        self.decided = (
            f"SELECT barrier_id FROM {s}.decisions WHERE trace_id = %s AND refused IS NULL"
        )
        self.refuse = f"UPDATE {s}.decisions SET refused = %s WHERE trace_id = %s AND id = %s"
        # Releasing keeps the row and its token: the next owner's token grows.
        self.release = (
            f"UPDATE {s}.leases SET owner = '', expires_at = 0 WHERE trace_id = %s AND owner = %s"
        )
        self.decisions_after = (
            f"SELECT id, barrier_id, decision, created_at FROM {s}.decisions "
            "WHERE trace_id = %s AND id > %s ORDER BY id"
        )
        self.insert_decision = (
            f"INSERT INTO {s}.decisions (trace_id, barrier_id, decision, created_at) "
            "VALUES (%s, %s, %s, %s) RETURNING id"
        )
        # The same for a waiting run (its row locked): it is ready now, and the workers hear.
        self.insert_decision_wake = (
            f"WITH d AS ({self.insert_decision}), w AS (UPDATE {s}.runs "
            "SET ready_at = extract(epoch FROM clock_timestamp()) WHERE trace_id = %s) "
            f"SELECT d.id, pg_notify('{channel(s)}', 'work')::text FROM d"
        )
        self.claim = _claim_sql(s)
        self.claim_gone = _gone_holders_sql(s)
        # One run SQL left to Python (_claim_one): its lease row and runs row, locked unless
        # someone holds them, and the database clock.
        self.claim_lock = (
            "SELECT leases.owner, leases.token, leases.expires_at, leases.host, leases.pid, "
            f"leases.started, extract(epoch FROM clock_timestamp())::float8, {cols} "
            f"FROM {s}.leases AS leases JOIN {s}.runs AS runs "
            "ON runs.trace_id = leases.trace_id WHERE leases.trace_id = %s "
            "FOR UPDATE OF leases, runs SKIP LOCKED"
        )
        # The grant _claim_one decided, and the run's ready_at cleared: one statement.
        self.claim_put = (
            f"WITH r AS (UPDATE {s}.runs SET ready_at = NULL WHERE trace_id = %s) "
            f"UPDATE {s}.leases SET owner = %s, token = %s, expires_at = %s, host = %s, "
            "pid = %s, started = %s WHERE trace_id = %s"
        )
        self.prune_runs = (
            f"WITH gone AS (DELETE FROM {s}.runs WHERE status = ANY(%s) AND updated_at < %s "
            "RETURNING trace_id, updated_at, id) SELECT trace_id FROM gone ORDER BY updated_at, id"
        )
        self.prune_rest = [
            f"DELETE FROM {s}.{table} WHERE trace_id = ANY(%s)"
            for table in (
                "checkpoints",
                "decisions",
                "leases",
                "events",
                "event_segments",
                "cancel_requests",
                "event_watchers",
            )
        ]
        self.events_after = (
            f"SELECT first_id, last_id, data FROM {s}.events WHERE trace_id = %s "
            "AND last_id > %s ORDER BY last_id"
        )
        self.next_segment = (
            f"INSERT INTO {s}.event_segments AS e (trace_id, segment) VALUES (%s, 1) "
            "ON CONFLICT (trace_id) DO UPDATE SET segment = e.segment + 1 RETURNING segment"
        )
        self.take_cancel = f"DELETE FROM {s}.cancel_requests WHERE trace_id = %s RETURNING 1"
        # An event tail in this process registers (or extends) its watcher row: writes of the
        # trace's events then send NOTIFY. Expired rows of any trace go at the same time.
        self.watch = (
            f"WITH gone AS (DELETE FROM {s}.event_watchers "
            "WHERE expires_at < extract(epoch FROM clock_timestamp())) "
            f"INSERT INTO {s}.event_watchers AS w (trace_id, watcher, expires_at) "
            "VALUES (%s, %s, extract(epoch FROM clock_timestamp()) + %s) "
            "ON CONFLICT (trace_id, watcher) DO UPDATE SET expires_at = excluded.expires_at"
        )
        self.unwatch = f"DELETE FROM {s}.event_watchers WHERE watcher = %s"
        self.version = f"SELECT max(version) FROM {s}.schema_version"


class PostgresStore(StoreBase):
    """Checkpoints, runs index, decision inbox and leases in a PostgreSQL database.

    One store object serves any number of runs in a process through a connection pool; any
    number of processes, on any number of hosts, may share the database. Works directly or
    behind PgBouncer in transaction mode. The pool opens on first use, and again after
    :meth:`aclose`. Runs on asyncio (psycopg's async support).

    Args:
        dsn: A libpq connection string or URL (``postgresql://user@host:5432/db``).
        schema: The Postgres schema that holds the tables; created if missing. Several
            independent stores may share a database under different schema names.
        min_size: Connections the pool keeps open.
        max_size: Connections the pool opens at most (each running transaction holds one).
        timeout: Seconds to wait for a connection (at open: for the server) before a
            CheckpointError.
        synchronous_commit: ``"off"`` (default) for checkpoint saves: a commit returns once
            the server has it, before its WAL reaches the disk, so it survives a killed client
            (as SQLiteStore's ``synchronous="NORMAL"``) and a crash of the server loses at most
            the last fraction of a second of checkpoints, never consistency. ``"on"``: every
            save waits for the WAL flush (and for synchronous replicas, as the server is set
            up). Decisions, leases and migrations always commit with the server's setting.
        listen_dsn: Where the store's one LISTEN connection goes (wake-up hints from other
            processes: :meth:`wait_for`); default ``dsn``. LISTEN needs a session of its own:
            when ``dsn`` is a PgBouncer in transaction mode, give the server's address (or a
            session-mode pool's) here. Without it, the store finds that its LISTEN hears
            nothing, says so in the log, and its waiters poll.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "graphexec",
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        synchronous_commit: Literal["on", "off"] = "off",
        listen_dsn: str | None = None,
    ) -> None:
        if synchronous_commit not in ("on", "off"):
            raise ValueError(
                f"synchronous_commit must be 'on' or 'off', not {synchronous_commit!r}"
            )
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(
                f"schema must be a lower-case SQL identifier (letters, digits, _), not {schema!r}"
            )
        try:
            info = conninfo_to_dict(dsn)
            if listen_dsn is not None:
                conninfo_to_dict(listen_dsn)
        except psycopg.Error as exc:
            raise ValueError(f"not a Postgres connection string: {exc}") from None
        self.dsn = dsn
        self.schema = schema
        self._where = (
            f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/"
            f"{info.get('dbname', info.get('user', ''))} schema {schema}"
        )
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._async_commit = synchronous_commit == "off"
        self._sql = _Sql(schema)
        self._pool: AsyncConnectionPool[_Connection] | None = None
        self._open_lock = anyio.Lock()
        self.listen_dsn = listen_dsn
        self._listener: Listener | None = None
        self._gone: list[tuple[int, str]] = []
        """Processes of this host found gone by the last claim that held leases then: (pid,
        start time). The next claim takes their runs like expired ones."""
        self._watcher = uuid.uuid4().hex
        """This store object's id in ``event_watchers``."""
        self._watching: dict[str, float] = {}
        """Traces whose events this store object watches: until when (monotonic) its row lives."""

    def __repr__(self) -> str:
        # The address only: a DSN may carry a password.
        return f"PostgresStore({self._where!r})"

    # -- connections --------------------------------------------------------------------------

    async def _get_pool(self) -> AsyncConnectionPool[_Connection]:
        pool = self._pool
        if pool is not None:
            return pool
        async with self._open_lock:
            if self._pool is None:
                if not _on_asyncio():
                    raise CheckpointError(
                        "PostgresStore runs on asyncio only (psycopg's async connections), "
                        "not on this event loop (trio?)"
                    )
                pool = AsyncConnectionPool(
                    self.dsn,
                    connection_class=_Connection,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    timeout=self._timeout,
                    # autocommit: a transaction is always explicit; prepare_threshold=None:
                    # no server-side prepared statements (PgBouncer transaction mode).
                    kwargs={"autocommit": True, "prepare_threshold": None},
                    open=False,
                    name=f"graphexec {self._where}",
                )
                try:
                    with self._errors():
                        # One connection of its own first: a server that does not answer fails
                        # at once with libpq's reason (the pool would retry until its timeout),
                        # and the schema is checked before the pool opens its connections.
                        setup = await psycopg.AsyncConnection.connect(
                            self.dsn,
                            autocommit=True,
                            prepare_threshold=None,
                            connect_timeout=max(1, round(self._timeout)),
                        )
                        async with setup:
                            await self._setup(setup)
                        await pool.open(wait=True, timeout=self._timeout)
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await pool.close()
                    raise
                self._pool = pool
            return self._pool

    async def _setup(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Create the schema or apply pending migrations (once, whoever opens first)."""
        found = migrations("postgres")
        known = found[-1][0] if found else 0
        version = await self._version(conn)
        if version == known:
            return
        self._check_version(version, known)
        async with conn.transaction():
            # Transaction-scoped: released at COMMIT, so PgBouncer's transaction mode keeps
            # it (a session lock would stay on a server connection another client gets).
            key = zlib.crc32(f"graphexec schema {self.schema}".encode())
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.schema}.schema_version ("
                "version integer PRIMARY KEY, applied_at double precision NOT NULL)"
            )
            cur = await conn.execute(self._sql.version)
            row = await cur.fetchone()
            version = 0 if row is None or row[0] is None else int(row[0])
            self._check_version(version, known)
            # Migrations name tables unqualified; SET LOCAL ends with this transaction.
            await conn.execute(f"SET LOCAL search_path TO {self.schema}")
            for number, name, script in found:
                if number <= version:
                    continue
                try:
                    await conn.execute(script.encode())  # several statements, no params
                except psycopg.Error as exc:
                    raise CheckpointError(
                        f"migration {name} failed on Postgres {self._where}: {exc}"
                    ) from exc
                await conn.execute(
                    f"INSERT INTO {self.schema}.schema_version VALUES (%s, %s)",
                    (number, now()),
                )

    async def _version(self, conn: psycopg.AsyncConnection[Any]) -> int:
        try:
            cur = await conn.execute(self._sql.version)
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            return 0
        row = await cur.fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def _check_version(self, version: int, known: int) -> None:
        if version > known:
            raise CheckpointError(
                f"Postgres {self._where} has checkpoint schema version {version}, newer than "
                f"this graphexec knows ({known}); upgrade graphexec to open it"
            )

    @asynccontextmanager
    async def _conn(self, trace_id: str | None = None) -> AsyncIterator[psycopg.AsyncCursor[Any]]:
        """A cursor on a pooled connection, for one statement or an explicit transaction."""
        with self._errors(trace_id):
            async with self._connection() as conn:
                yield conn.kept_cursor()

    @asynccontextmanager
    async def _tx(self, trace_id: str | None = None) -> AsyncIterator[psycopg.AsyncCursor[Any]]:
        """A cursor inside one transaction, committed at the end (rolled back on an error)."""
        with self._errors(trace_id):
            async with self._connection() as conn, conn.transaction():
                yield conn.kept_cursor()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Connection]:
        """A pooled connection that the server has not closed.

        An idle connection has nothing to read, unless its server closed it (a restart, an
        administrator's pg_terminate_backend, an idle timeout): then a FATAL message or the
        end of the stream is waiting. One poll(2) of its socket tells, with no round trip;
        only a connection with something to read is checked with an empty query. A closed
        one goes back to the pool, which drops it and opens a new one, and the next is taken:
        the first operation after a server restart succeeds instead of failing once."""
        pool = await self._get_pool()
        conn: _Connection | None = await pool.getconn()
        try:
            for _ in range(self._max_size + 1):  # at most max_size closed ones, then a new one
                assert conn is not None
                if not await _closed_by_server(conn):
                    break
                closed, conn = conn, None
                await pool.putconn(closed)
                conn = await pool.getconn()
            assert conn is not None
            yield conn
        finally:
            if conn is not None:
                with anyio.CancelScope(shield=True):
                    await pool.putconn(conn)

    def _errors(self, trace_id: str | None = None) -> AbstractContextManager[None]:
        return _errors(self._where, trace_id)

    async def aclose(self) -> None:
        """Close the pool's connections and the LISTEN connection (this store object's event
        watches end with them); the next call opens them again."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.aclose()
        if self._watching and self._pool is not None:
            self._watching.clear()
            with anyio.CancelScope(shield=True):
                try:
                    async with self._conn() as cur:
                        await cur.execute(self._sql.unwatch, (self._watcher,))
                except CheckpointError:
                    pass  # the rows expire on their own
        async with self._open_lock:
            pool, self._pool = self._pool, None
            if pool is not None:
                with anyio.CancelScope(shield=True):
                    await pool.close()

    # -- wake-up hints ------------------------------------------------------------------------

    async def wait_for(self, topic: str, within: float) -> bool:
        """Wait at most ``within`` seconds for a hint on ``topic``, from this process (the
        store's :attr:`hints`) or from any other through ``LISTEN`` (``_pg_listen.py``).

        A wait on ``events:<trace_id>`` also registers this store object as a watcher of the
        trace (a row in ``event_watchers``, extended while it waits, expiring about
        :data:`WATCH_TTL` seconds after its last wait): only then do writes of the trace's
        events send NOTIFY. The first wait after registering returns True at once, so the
        caller reads again what was committed before the registration (it sent no hint).
        The first wait of a store object also opens its LISTEN connection; while that is down
        this waits on in-process hints only (the caller polls, as always)."""
        if not _on_asyncio():
            return await self.hints.wait(topic, within)  # the store itself refuses other loops
        listener = self._listener
        if listener is None:
            listener = self._listener = Listener(
                self.listen_dsn or self.dsn,
                self.schema,
                self.hints,
                where=self._where,
                connect_timeout=self._timeout,
                send=self._notify,
            )
        if not await listener.ready():
            return await self.hints.wait(topic, within)
        if topic.startswith(_EVENTS_PREFIX) and await self._watch(
            topic[len(_EVENTS_PREFIX) :], within
        ):
            return True
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.pump)
            got = await self.hints.wait(topic, within)
            tg.cancel_scope.cancel()
        return got

    @property
    def hints_across_processes(self) -> bool:
        """True while hints from other processes reach this store object: its LISTEN
        connection is open and has heard its own probe (so callers may poll less often)."""
        listener = self._listener
        return listener is not None and listener.verified and not listener.deaf

    async def _watch(self, trace_id: str, within: float) -> bool:
        """Register or extend this store object's watcher row for ``trace_id`` when it would
        lapse during this wait; True when the row is new (or had lapsed)."""
        t = time.monotonic()
        until = self._watching.get(trace_id)
        if until is not None and until - t > within + _WATCH_MARGIN:
            return False
        ttl = max(WATCH_TTL, 3 * within)
        try:
            async with self._conn(trace_id) as cur:
                await cur.execute(self._sql.watch, (trace_id, self._watcher, ttl))
        except CheckpointError as exc:
            get_logger(trace_id=trace_id).debug("event watch not registered", error=exc.message)
            return False
        for other, lapse in list(self._watching.items()):
            if lapse <= t:
                del self._watching[other]
        self._watching[trace_id] = t + ttl
        return until is None or until <= t

    async def _notify(self, topic: str) -> None:
        """Send a hint on this store's channel to every listener (through the pool)."""
        async with self._conn() as cur:
            await cur.execute("SELECT pg_notify(%s, %s)", (channel(self.schema), topic))

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
        check_rows(rows, run, None)  # one trace, increasing seqs; the last seq is checked there
        columns = list(zip(*(row_params(r)[1:] for r in rows), strict=True)) or [()] * 11
        fenced = lease is not None and lease.token != 0
        args = (
            trace_id,
            *(list(c) for c in columns),
            *run_params(run)[1:],
            lease.owner if fenced and lease is not None else None,
            lease.token if fenced and lease is not None else None,
            None if lease is None else lease.ttl,
            lease.owner if release and lease is not None else None,
            self._async_commit,
            decisions_after,
            *(
                (None, None, None)
                if events is None
                else (events.first_id, events.last_id, events.data)
            ),
        )
        async with self._conn(trace_id) as cur:
            try:
                if lease is not None and not fenced:
                    # A writer that never acquired (token 0: a tool, a test) takes the lease as
                    # acquire_lease would, in the save's transaction.
                    async with cur.connection.transaction():
                        await self._grant(cur, trace_id, lease)
                        await cur.execute(self._sql.save, args)
                        found = await cur.fetchall()
                else:
                    await cur.execute(self._sql.save, args)
                    found = await cur.fetchall()
            except psycopg.Error as exc:
                if exc.sqlstate == _SEQ_BEHIND:
                    check_rows(rows, run, int(exc.diag.message_detail or 0))
                if exc.sqlstate == _LEASE_LOST and lease is not None:
                    held, t = _lease_detail(exc.diag.message_detail)
                    check_write(held, lease, t, trace_id=trace_id)
                raise
        return [stored_decision(r) for r in found]

    async def _grant(
        self,
        cur: psycopg.AsyncCursor[Any],
        trace_id: str,
        lease: Lease,
        *,
        take_over: bool = False,
        expect_seq: int | None = None,
    ) -> Sequence[Any]:
        """Grant ``lease`` by ``_leases.grant`` through the schema's acquire_lease function:
        one statement in the common cases; returns its row (the run's row from column 9).

        The function decides every case that needs no look at a process. When another owner
        holds the lease it writes nothing and returns the row: ``grant`` then raises RunLocked
        (or LeaseLost), or finds the holder is a process of this host that is gone, and the
        function is called again to take the lease from that holder only (if the row still
        names it: a holder that changed meanwhile is judged anew)."""
        gone: tuple[str, int] | None = None
        while True:
            await cur.execute(
                self._sql.acquire,
                (
                    trace_id,
                    lease.owner,
                    lease.token,
                    lease.ttl,
                    lease.host,
                    lease.pid,
                    lease.started,
                    take_over,
                    expect_seq,
                    *(gone or (None, None)),
                ),
            )
            r: Sequence[Any] | None = await cur.fetchone()
            assert r is not None  # the function returns one row
            if r[0]:
                return r
            held = lease_row(r[1:7])
            grant(
                held,
                lease,
                r[7],
                trace_id=trace_id,
                take_over=take_over,
                last_seq=r[8],
                expect_seq=expect_seq,
            )
            if gone == (held.owner, held.token):
                # grant() allows what the function refused for the same row: a bug, not a state.
                raise CheckpointError(
                    f"Postgres {self._where}: acquire_lease refused a lease that the shared "
                    f"rule grants ({held!r})",
                    trace_id=trace_id,
                )
            gone = (held.owner, held.token)

    async def submit_decision(
        self,
        trace_id: str,
        barrier_id: str,
        decision: Decision,
        *,
        every_occurrence: bool = False,
    ) -> int:
        blob = decision_blob(trace_id, barrier_id, decision)
        async with self._tx(trace_id) as cur:
            # FOR UPDATE: decisions of one trace are inserted one after another, each committed
            # before the next takes an id, so a reader's cursor never passes an id that commits
            # later; and a save that finishes the run waits for (or is waited on by) this check.
            await cur.execute(self._sql.get_run_locked, (trace_id,))
            found = await cur.fetchone()
            run = None if found is None else run_info(found)
            await cur.execute(self._sql.decided, (trace_id,))
            decided = {r[0] for r in await cur.fetchall()}
            key = check_decision_target(
                run,
                trace_id,
                barrier_id,
                decision,
                every_occurrence=every_occurrence,
                decided=decided,
            )
            if run is not None and run.status == "waiting":
                # Its driver can go on now: any worker may (a spurious wake-up parks again).
                await cur.execute(
                    self._sql.insert_decision_wake, (trace_id, key, blob, now(), trace_id)
                )
            else:
                await cur.execute(self._sql.insert_decision, (trace_id, key, blob, now()))
            inserted = await cur.fetchone()
        assert inserted is not None
        return int(inserted[0])

    async def refuse_decision(self, trace_id: str, decision_id: int, reason: str) -> None:
        async with self._conn(trace_id) as cur:
            await cur.execute(self._sql.refuse, (reason, trace_id, decision_id))

    async def acquire_lease(
        self,
        trace_id: str,
        lease: Lease,
        *,
        take_over: bool = False,
        expect_seq: int | None = None,
    ) -> LeaseGrant:
        check_trace_id(trace_id)
        async with self._conn(trace_id) as cur:
            r = await self._grant(cur, trace_id, lease, take_over=take_over, expect_seq=expect_seq)
        return LeaseGrant(token=r[24], run=None if r[9] is None else run_info(r[9:]))

    async def claim_runs(self, graph_names: Sequence[str], leases: Sequence[Lease]) -> list[Claim]:
        check_claim_args(graph_names, leases)
        if not leases:
            return []
        host, pid, _ = this_process()
        args = {
            "graphs": list(graph_names),
            "n": len(leases),
            "owners": [lease.owner for lease in leases],
            "ttls": [lease.ttl for lease in leases],
            "hosts": [lease.host for lease in leases],
            "pids": [lease.pid for lease in leases],
            "starteds": [lease.started for lease in leases],
            "host": host,
            "pid": pid,
            "gone_pids": [p for p, _ in self._gone],
            "gone_starteds": [started for _, started in self._gone],
        }
        async with self._conn() as cur:
            await cur.execute(self._sql.claim, args)
            found = await cur.fetchall()
        claims: list[Claim] = []
        alive = Liveness()
        gone: list[LeaseRow] = []
        for r in sorted(found, key=lambda r: r[0]):
            if r[0] == -1:  # a process of this host holding leases: is it still there?
                holder = LeaseRow(
                    owner="?", token=0, expires_at=0.0, host=r[18], pid=r[19], started=r[20]
                )
                if alive.gone(holder):
                    gone.append(holder)
            else:
                run, held = run_info(r[1:]), lease_row(r[15:])
                lease = msgspec.structs.replace(leases[r[0] - 1], token=held.token)
                claims.append(Claim(trace_id=run.trace_id, lease=lease, run=run))
        # The next claim treats their leases as free, ordering their runs with the others (a
        # busy fleet never has leases left for the step below).
        self._gone = [(h.pid, h.started) for h in gone]
        # With leases left now: one short transaction each (process_gone needs this host's
        # process table, which SQL cannot see).
        if gone and len(claims) < len(leases):
            async with self._conn() as cur:
                await cur.execute(
                    self._sql.claim_gone,
                    {
                        "graphs": list(graph_names),
                        "host": host,
                        "pids": [h.pid for h in gone],
                        "starteds": [h.started for h in gone],
                        "n": len(leases) - len(claims),
                    },
                )
                held_by_gone = [r[0] for r in await cur.fetchall()]
        else:
            held_by_gone = []
        for trace_id in held_by_gone:
            if len(claims) == len(leases):
                break
            done = await self._claim_one(trace_id, leases[len(claims)], alive)
            if done is not None:
                claims.append(done)
        return claims

    async def _claim_one(self, trace_id: str, lease: Lease, alive: Liveness) -> Claim | None:
        """Claim one run if it needs a driver (the shared rule, on the database clock): both
        rows locked unless someone holds them (leases before runs, the order every writer
        locks in)."""
        sql = self._sql
        async with self._tx(trace_id) as cur:
            await cur.execute(sql.claim_lock, (trace_id,))
            r = await cur.fetchone()
            if r is None:
                return None  # being written or claimed right now
            held, t, run = lease_row(r), r[6], run_info(r[7:])
            if not needs_driver(run.status, run.ready_at, held, t, alive):
                return None
            done, new = claim(run, held, lease, t)
            await cur.execute(
                sql.claim_put,
                (trace_id, new.owner, new.token, new.expires_at, new.host, new.pid)
                + (new.started, trace_id),
            )
        return done

    async def release_lease(self, trace_id: str, owner: str) -> None:
        async with self._conn(trace_id) as cur:
            await cur.execute(self._sql.release, (trace_id, owner))

    async def append_events(self, trace_id: str, batch: EventBatch, *, lease: Lease) -> None:
        async with self._conn(trace_id) as cur:
            try:
                await cur.execute(
                    self._sql.append,
                    (
                        trace_id,
                        lease.owner,
                        lease.token,
                        batch.first_id,
                        batch.last_id,
                        batch.data,
                    ),
                )
            except psycopg.Error as exc:
                if exc.sqlstate == _LEASE_LOST:
                    check_append(
                        _lease_detail(exc.diag.message_detail)[0], lease, trace_id=trace_id
                    )
                raise

    async def events_after(self, trace_id: str, after: int) -> list[EventBatch]:
        async with self._conn(trace_id) as cur:
            await cur.execute(self._sql.events_after, (trace_id, after))
            return [
                EventBatch(first_id=r[0], last_id=r[1], data=bytes(r[2]))
                for r in await cur.fetchall()
            ]

    async def next_event_segment(self, trace_id: str) -> int:
        async with self._conn(trace_id) as cur:
            await cur.execute(self._sql.next_segment, (trace_id,))
            r = await cur.fetchone()
        assert r is not None
        return int(r[0])

    async def request_cancel(self, trace_id: str) -> bool:
        host, pid, _ = this_process()
        alive: tuple[str, int] | None = None
        async with self._conn(trace_id) as cur:
            while True:
                await cur.execute(
                    self._sql.cancel, (trace_id, host, pid, *(alive or (None, None)), now())
                )
                r = await cur.fetchone()
                assert r is not None  # the function returns one row
                if r[0] is not None:
                    return bool(r[0])
                # Held by another process of this host: recorded only if it is alive
                # (LeaseRow.live, on the database clock, like every lease).
                held = lease_row(r[1:7])
                if not held.live(r[7]):
                    return False
                if alive == (held.owner, held.token):
                    raise CheckpointError(
                        f"Postgres {self._where}: request_cancel did not record a request for "
                        f"a live holder ({held!r})",
                        trace_id=trace_id,
                    )
                alive = (held.owner, held.token)

    async def take_cancel_request(self, trace_id: str) -> bool:
        async with self._conn(trace_id) as cur:
            await cur.execute(self._sql.take_cancel, (trace_id,))
            return await cur.fetchone() is not None

    async def prune(
        self, *, older_than: float, statuses: Sequence[str] = ("completed",)
    ) -> list[str]:
        wanted = sorted(prunable_statuses(statuses))
        async with self._tx() as cur:
            await cur.execute(self._sql.prune_runs, (wanted, older_than))
            gone = [r[0] for r in await cur.fetchall()]
            if gone:
                for statement in self._sql.prune_rest:
                    await cur.execute(statement, (gone,))
        return gone

    # -- reads --------------------------------------------------------------------------------

    async def load_chain(self, trace_id: str, seq: int | None = None) -> list[StoredCheckpoint]:
        upto = MAX_SEQ if seq is None else seq
        async with self._conn(trace_id) as cur:
            await cur.execute(self._sql.load_chain, {"t": trace_id, "u": upto})
            return [stored_checkpoint(r) for r in await cur.fetchall()]

    async def get_run(self, trace_id: str) -> RunInfo | None:
        async with self._conn(trace_id) as cur:
            await cur.execute(self._sql.get_run, (trace_id,))
            found = await cur.fetchone()
            return None if found is None else run_info(found)

    async def runs(
        self, *, status: str | None = None, graph_name: str | None = None, limit: int = 100
    ) -> list[RunInfo]:
        check_status(status)
        where: list[str] = []
        args: list[Any] = []
        if status is not None:
            where.append("runs.status = %s")
            args.append(status)
        if graph_name is not None:
            where.append("runs.graph_name = %s")
            args.append(graph_name)
        # id breaks ties in first-insertion order, as MemoryStore's stable sort does.
        query = (
            self._sql.runs
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY runs.updated_at DESC, runs.id LIMIT %s"
        )
        args.append(limit)
        async with self._conn() as cur:
            await cur.execute(query, args)
            return [run_info(r) for r in await cur.fetchall()]

    async def history(
        self, trace_id: str, *, limit: int | None = None, before: int | None = None
    ) -> list[CheckpointSummary]:
        params = (trace_id, MAX_SEQ if before is None else before, limit)  # LIMIT NULL: all
        async with self._conn(trace_id) as cur:
            await cur.execute(self._sql.history, params)
            found = await cur.fetchall()
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
            for r in reversed(found)
        ]

    async def decisions_after(self, trace_id: str, cursor: int) -> list[StoredDecision]:
        async with self._conn(trace_id) as cur:
            await cur.execute(self._sql.decisions_after, (trace_id, cursor))
            return [stored_decision(r) for r in await cur.fetchall()]


async def _closed_by_server(conn: psycopg.AsyncConnection[Any]) -> bool:
    """True if the server closed this idle connection (``PostgresStore._connection``)."""
    if conn.closed:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    if not readable:
        return False
    try:
        await conn.execute("")  # takes in what came (a notice, or the FATAL and the end)
    except psycopg.Error:
        return True
    return False


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _lease_detail(detail: str | None) -> tuple[LeaseRow | None, float]:
    """The lease row and the database clock a GX003 error carries."""
    owner, token, expires_at, host, pid, started, t = _detail_decoder.decode(detail or "[]")
    if owner is None:  # no lease row at all
        return None, t
    row = LeaseRow(
        owner=owner,
        token=token or 0,
        expires_at=expires_at or 0.0,
        host=host or "",
        pid=pid or 0,
        started=started or "",
    )
    return row, t


@contextmanager
def _errors(where: str, trace_id: str | None = None) -> Iterator[None]:
    """Turns whatever the driver raises, or a damaged row makes the mapping raise, into a
    graphexec error; graphexec's own errors and cancellation pass through."""
    try:
        yield
    except GraphError:
        raise
    except psycopg.Error as exc:
        # One line: libpq's messages span several (a hint on its own line, tabs).
        text = " ".join(str(exc).split())
        raise CheckpointError(
            f"Postgres store {where}: {type(exc).__name__}: {text}", trace_id=trace_id
        ) from exc
    except UnicodeEncodeError as exc:
        raise CheckpointError(
            f"Postgres store {where}: a value is not encodable as UTF-8 ({exc})",
            trace_id=trace_id,
        ) from exc
    except (ValueError, TypeError, OverflowError, RecursionError, IndexError) as exc:
        # A column that no longer decodes (JSON or msgpack) or holds the wrong type: nothing
        # read may surface as anything but a graphexec error.
        raise CheckpointError(
            f"Postgres store {where} holds a damaged row: {exc!r}", trace_id=trace_id
        ) from exc
