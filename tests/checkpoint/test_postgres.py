"""PostgresStore specifics: schema versions and migrations (also opened concurrently), the
extra staying out of ``import graphexec``, errors that name the server and never its password,
damaged rows, leases and decision ids under real concurrency, with and without PgBouncer."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

import graphexec as gx
from graphexec._decisions import Approve
from graphexec.checkpoint import _postgres as postgres_module
from graphexec.checkpoint._record import Lease
from graphexec.checkpoint._sql import ROW_COLUMNS, RUN_COLUMNS, migrations, row_params, run_params
from graphexec.exceptions import CheckpointError, RunLocked

from _postgres_kit import _free_port  # isort: skip  (helper modules next to this file)
from _resume_kit import APPROVED, approval  # isort: skip
from test_store_contract import make_row, make_run, save_kinds  # isort: skip

MIGRATIONS = migrations("postgres")
LATEST = MIGRATIONS[-1][0]
APPLIED = [(n,) for n, _, _ in MIGRATIONS]
"""The schema_version rows of a schema at the latest version (one per migration file)."""


def new_schema() -> str:
    return f"t_{uuid.uuid4().hex[:16]}"


def sql(dsn: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement on a connection of its own (as another program would)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement.encode() if not args else statement, args or None)
        return list(cur.fetchall()) if cur.description is not None else []


@pytest.fixture(params=["direct", "pgbouncer"])
def any_dsn(request: pytest.FixtureRequest) -> str:
    """The session's database, directly and through PgBouncer in transaction mode."""
    name = "pg_dsn" if request.param == "direct" else "pgbouncer_dsn"
    return str(request.getfixturevalue(name))


def test_import_graphexec_does_not_import_psycopg() -> None:
    """The extra stays optional: `import graphexec` (and gx.SQLiteStore) load no psycopg."""
    code = (
        "import sys, graphexec as gx; gx.SQLiteStore; gx.MemoryStore;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('psycopg', 'psycopg_pool')];"
        "assert not bad, bad; gx.PostgresStore; assert 'psycopg' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


class TestSchema:
    async def test_new_schema_gets_latest_version(self, pg_dsn: str) -> None:
        """A first open creates the schema, its tables and the version row."""
        schema = new_schema()
        async with gx.PostgresStore(pg_dsn, schema=schema) as store:
            assert await store.runs() == []
        rows = sql(pg_dsn, f"SELECT version FROM {schema}.schema_version ORDER BY version")
        assert APPLIED == rows  # one row per migration applied
        assert LATEST == 4
        tables = {
            r[0]
            for r in sql(
                pg_dsn,
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                schema,
            )
        }
        assert {
            "checkpoints",
            "runs",
            "decisions",
            "leases",
            "schema_version",
            "events",
            "event_segments",
            "cancel_requests",
            "event_watchers",
        } == tables

    async def test_concurrent_first_opens_migrate_once(self, pg_dsn: str) -> None:
        """Eight stores opening one new schema at once (separate pools and connections): the
        advisory lock makes one of them migrate; all of them work."""
        schema = new_schema()
        stores = [gx.PostgresStore(pg_dsn, schema=schema, max_size=1) for _ in range(8)]
        try:
            async with anyio.create_task_group() as tg:
                for i, store in enumerate(stores):
                    tg.start_soon(save_kinds, store, f"t{i}", "bd")
            assert len(await stores[0].runs()) == 8
        finally:
            for store in stores:
                await store.aclose()
        versions = sql(pg_dsn, f"SELECT version FROM {schema}.schema_version ORDER BY version")
        assert APPLIED == versions  # each applied once

    @pytest.mark.parametrize("version", [1, 2, 3])
    async def test_an_older_schema_migrates_to_the_latest(
        self, pg_dsn: str, monkeypatch: pytest.MonkeyPatch, version: int
    ) -> None:
        """A schema created at an older version (1: before the event log; 2: before the
        one-round-trip functions) migrates to the latest on open: its rows load as they were,
        and a run's events are recorded and read back through the new functions."""
        schema = new_schema()
        with monkeypatch.context() as m:
            m.setattr(postgres_module, "migrations", lambda backend: MIGRATIONS[:version])
            async with gx.PostgresStore(pg_dsn, schema=schema) as store:
                assert [] == await store.load_chain("t1")  # creates the schema at `version`
        rows = [make_row("t1", 0, "base"), make_row("t1", 1)]
        with psycopg.connect(pg_dsn, autocommit=True) as conn:  # as that version wrote them
            for row in rows:
                conn.execute(
                    f"INSERT INTO {schema}.checkpoints ({ROW_COLUMNS}) VALUES "
                    f"({', '.join(['%s'] * 12)})",
                    row_params(row),
                )
            conn.execute(  # the runs columns before schema 4 (no ready_at)
                f"INSERT INTO {schema}.runs ({RUN_COLUMNS.removesuffix(', ready_at')}) "
                f"VALUES ({', '.join(['%s'] * 13)})",
                run_params(make_run("t1", last_seq=1))[:13],
            )
        assert [(version,)] == sql(pg_dsn, f"SELECT max(version) FROM {schema}.schema_version")
        async with gx.PostgresStore(pg_dsn, schema=schema) as store:
            assert await store.load_chain("t1") == rows
            ex = gx.GraphExecutor(store=store)
            await ex.execute(approval(), {}, trace_id="t2", decisions={"approve": Approve()})
            events = [e async for e in ex.events("t2")]
        assert isinstance(events[0], gx.GraphStart) and isinstance(events[-1], gx.GraphComplete)
        assert [(LATEST,)] == sql(pg_dsn, f"SELECT max(version) FROM {schema}.schema_version")
        functions = sql(
            pg_dsn,
            "SELECT count(*) FROM pg_proc WHERE proname = 'save_checkpoints' "
            "AND pronamespace = %s::regnamespace",
            schema,
        )
        assert [(1,)] == functions  # replaced, not overloaded

    async def test_reopen_applies_only_new_migrations(
        self, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Reopening applies no migration twice; a newer NNN_*.sql file is applied once, to
        data written under the older version."""
        schema = new_schema()
        async with gx.PostgresStore(pg_dsn, schema=schema) as store:
            await save_kinds(store, "t1", "bd")
        extra = (
            LATEST + 1,
            f"{LATEST + 1:03}_test.sql",
            "CREATE TABLE applied (n integer); INSERT INTO applied VALUES (1); "
            + "ALTER TABLE runs ADD COLUMN note text;",
        )
        monkeypatch.setattr(postgres_module, "migrations", lambda backend: [*MIGRATIONS, extra])
        for _ in range(2):
            async with gx.PostgresStore(pg_dsn, schema=schema) as store:
                assert len(await store.load_chain("t1")) == 2
        assert [(1,)] == sql(pg_dsn, f"SELECT count(*) FROM {schema}.applied")
        versions = sql(pg_dsn, f"SELECT version FROM {schema}.schema_version ORDER BY version")
        assert [*APPLIED, (LATEST + 1,)] == versions

    async def test_failed_migration_changes_nothing(
        self, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A migration that fails is rolled back whole (its tables and the version row) and is
        a CheckpointError naming the file; the data stays readable by the old version."""
        schema = new_schema()
        async with gx.PostgresStore(pg_dsn, schema=schema) as store:
            await save_kinds(store, "t1", "b")
        bad = (LATEST + 1, "009_bad.sql", "CREATE TABLE half (n integer); SELECT * FROM missing;")
        monkeypatch.setattr(postgres_module, "migrations", lambda backend: [*MIGRATIONS, bad])
        store = gx.PostgresStore(pg_dsn, schema=schema)
        with pytest.raises(CheckpointError, match="migration 009_bad.sql failed"):
            await store.runs()
        await store.aclose()
        assert [(LATEST,)] == sql(pg_dsn, f"SELECT max(version) FROM {schema}.schema_version")
        assert [(None,)] == sql(pg_dsn, f"SELECT to_regclass('{schema}.half')")

    async def test_newer_schema_is_refused_untouched(self, pg_dsn: str) -> None:
        """A schema whose version is newer than the code is a CheckpointError, and stays as it
        was."""
        schema = new_schema()
        async with gx.PostgresStore(pg_dsn, schema=schema) as store:
            await save_kinds(store, "t1", "b")
        sql(pg_dsn, f"INSERT INTO {schema}.schema_version VALUES (99, 0)")
        store = gx.PostgresStore(pg_dsn, schema=schema)
        with pytest.raises(CheckpointError, match="schema version 99, newer"):
            await store.load_chain("t1")
        await store.aclose()
        assert [(len(APPLIED) + 1,)] == sql(pg_dsn, f"SELECT count(*) FROM {schema}.schema_version")

    def test_schema_name_is_an_identifier(self) -> None:
        """The schema name goes into SQL text, so only plain identifiers are taken."""
        with pytest.raises(ValueError, match="lower-case SQL identifier"):
            gx.PostgresStore("postgresql://x@127.0.0.1/db", schema="a; DROP TABLE runs")


class TestErrors:
    async def test_no_server_names_the_address_not_the_password(self) -> None:
        """A server that does not answer is a CheckpointError naming host, port and database;
        the password in the DSN appears neither there nor in the repr."""
        port = _free_port()
        store = gx.PostgresStore(
            f"postgresql://u:s3cret@127.0.0.1:{port}/nodb?connect_timeout=1", timeout=1.0
        )
        with pytest.raises(CheckpointError) as info:
            await store.runs()
        await store.aclose()
        assert f"127.0.0.1:{port}/nodb" in str(info.value)
        assert "s3cret" not in str(info.value) and "s3cret" not in repr(store)

    async def test_damaged_columns_are_checkpoint_errors(self, pg_dsn: str) -> None:
        """A runs row whose JSON no longer decodes reads as a CheckpointError naming the trace,
        never a decoder's exception; a decision blob that is not msgpack comes back as a row
        the run skips (decision None, the reason in error), as on SQLite."""
        schema = new_schema()
        async with gx.PostgresStore(pg_dsn, schema=schema) as store:
            await store.save([make_row("t1", 0, "base")], make_run("t1"))
            await store.submit_decision("t1", "review#1", Approve())
            sql(pg_dsn, f"UPDATE {schema}.runs SET barrier_counts = '{{not json'")
            sql(pg_dsn, f"UPDATE {schema}.decisions SET decision = '\\xc1'::bytea")
            with pytest.raises(CheckpointError, match="damaged") as info:
                await store.get_run("t1")
            assert "t1" == info.value.trace_id
            with pytest.raises(CheckpointError, match="damaged"):
                await store.runs()
            # A decision that is not one is handed to the run to skip and report, never raised.
            [skipped] = await store.decisions_after("t1", 0)
            assert skipped.decision is None and skipped.error is not None

    async def test_a_value_postgres_refuses_is_a_checkpoint_error(self, pg_dsn: str) -> None:
        """A lone surrogate in a text column cannot be sent: CheckpointError, nothing written."""
        async with gx.PostgresStore(pg_dsn, schema=new_schema()) as store:
            run = make_run("t1")
            run.graph_name = "bad\ud800"
            with pytest.raises(CheckpointError, match="UTF-8"):
                await store.save([make_row("t1", 0, "base")], run)
            assert await store.get_run("t1") is None


class TestConcurrency:
    async def test_one_lease_winner_among_many(self, any_dsn: str) -> None:
        """Twenty owners in four pools race for one trace's lease: exactly one gets it, the
        others get RunLocked."""
        schema = new_schema()
        stores = [gx.PostgresStore(any_dsn, schema=schema, max_size=5) for _ in range(4)]
        won: list[str] = []
        lost: list[str] = []

        async def take(store: gx.PostgresStore, owner: str) -> None:
            try:
                await store.acquire_lease("t1", Lease(owner, 30.0))
                won.append(owner)
            except RunLocked:
                lost.append(owner)

        try:
            await stores[0].runs()  # the schema first: not what is raced here
            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(take, stores[i % 4], f"owner{i}")
        finally:
            for store in stores:
                await store.aclose()
        assert 1 == len(won) and 19 == len(lost)

    async def test_cursor_never_skips_a_decision(self, any_dsn: str) -> None:
        """Decisions submitted concurrently from several pools while a reader advances its
        cursor: the reader sees every one, in id order, none twice (ids of one trace commit in
        increasing order)."""
        schema = new_schema()
        writers = [gx.PostgresStore(any_dsn, schema=schema, max_size=4) for _ in range(3)]
        reader = gx.PostgresStore(any_dsn, schema=schema, max_size=1)
        run = make_run("t1", barrier_counts={}, pending_barrier=None)
        count = 60
        seen: list[int] = []
        try:
            await writers[0].save([make_row("t1", 0, "base")], run)

            async def submit(store: gx.PostgresStore, n: int) -> None:
                await store.submit_decision("t1", f"review#{n}", Approve())

            async def read() -> None:
                cursor = 0
                while len(seen) < count:
                    for d in await reader.decisions_after("t1", cursor):
                        seen.append(d.id)
                        cursor = d.id
                    await anyio.sleep(0.001)

            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                for n in range(1, count + 1):
                    tg.start_soon(submit, writers[n % 3], n)
            final = [d.id for d in await reader.decisions_after("t1", 0)]
        finally:
            for store in [*writers, reader]:
                await store.aclose()
        assert final == seen
        assert count == len(set(seen))


async def test_a_run_decided_and_resumed_through_other_store_objects(pg_dsn: str) -> None:
    """A run waits at its barrier through one pool, is decided through a second (another
    process) and resumed through a third, as with SQLite."""
    schema = new_schema()
    graph = approval()
    first = gx.PostgresStore(pg_dsn, schema=schema)
    second = gx.PostgresStore(pg_dsn, schema=schema)
    third = gx.PostgresStore(pg_dsn, schema=schema)
    try:
        async with gx.GraphExecutor(store=first).execute_stream(graph, {}, trace_id="r1") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    break
        assert "waiting" == (await first.get_run("r1") or make_run("x")).status
        await second.submit_decision("r1", "approve#1", gx.Approve())
        async with gx.GraphExecutor(store=third).resume_from(graph, "r1") as run:
            async for _ in run:
                pass
        assert "completed" == run.result.status
        assert APPROVED == run.result.state["approve"] and run.result.state["sent"] is True
    finally:
        for store in (first, second, third):
            await store.aclose()


PG_WORKER = Path(__file__).with_name("pg_crash_worker.py")
NODES = 60
NAMES = [f"n{i:02d}" for i in range(NODES)]


class TestCrash:
    """SIGKILL a process driving a run on Postgres; a new process finishes it (the checks of
    test_crash.py, on a server shared by processes instead of a file)."""

    def start(self, dsn: str, schema: str, side: Path, trace_id: str, mode: str) -> Any:
        return subprocess.Popen(
            [sys.executable, str(PG_WORKER), dsn, schema, str(side), trace_id, mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, proc: Any) -> dict[str, Any]:
        out, err = proc.communicate(timeout=60)
        assert 0 == proc.returncode, err
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        assert 1 == len(lines), out + err
        result: dict[str, Any] = json.loads(lines[0].removeprefix("RESULT "))
        return result

    def expect(self, proc: Any, prefix: str) -> str:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(prefix):
                return str(line).strip()
        proc.wait()
        pytest.fail(f"worker exited ({proc.returncode}) before {prefix!r}: {proc.stderr.read()}")

    @pytest.mark.parametrize("kill_after", [3, 29])
    def test_sigkill_mid_chain_then_resume(
        self, pg_dsn: str, tmp_path: Path, kill_after: int
    ) -> None:
        """Killed after ``kill_after`` node executions and resumed in a new process: the chain
        completes with every node's entry once; a node covered by a committed checkpoint never
        ran twice, at most the interrupted one did."""
        schema, side, trace_id = new_schema(), tmp_path / "side", f"crash-{kill_after}"
        proc = self.start(pg_dsn, schema, side, trace_id, "run")
        try:
            self.expect(proc, "STARTED")
            while not side.exists() or len(side.read_text().splitlines()) < kill_after:
                assert proc.poll() is None, "the worker finished before the kill point"
                time.sleep(0.001)
        finally:
            proc.kill()
            proc.communicate()
        assert -9 == proc.returncode
        rows = sql(
            pg_dsn,
            f"SELECT step, status FROM {schema}.checkpoints WHERE trace_id = %s ORDER BY seq",
            trace_id,
        )
        assert "running" == rows[-1][1]
        covered = max(step for step, _ in rows)

        result = self.finish(self.start(pg_dsn, schema, side, trace_id, "resume"))
        assert "completed" == result["status"]
        assert {"log": NAMES} == result["state"]
        runs = Counter(line.split(" ")[1] for line in side.read_text().splitlines())
        assert set(NAMES) == set(runs)
        assert all(1 == runs[name] for name in NAMES[:covered])
        assert [name for name, n in runs.items() if n > 1] in ([], [NAMES[covered]])

    def test_sigkill_at_a_barrier_then_decide_from_another_process(
        self, pg_dsn: str, tmp_path: Path
    ) -> None:
        """A run killed while waiting at its barrier is decided from this process and finished
        by a third one, which uses the decision without waiting."""
        schema, side, trace_id = new_schema(), tmp_path / "side", "crash-barrier"
        proc = self.start(pg_dsn, schema, side, trace_id, "barrier")
        try:
            assert "WAITING approve#1" == self.expect(proc, "WAITING ")
        finally:
            proc.kill()
            proc.communicate()

        async def decide() -> None:
            async with gx.PostgresStore(pg_dsn, schema=schema) as store:
                await store.submit_decision(trace_id, "approve#1", gx.Approve())

        anyio.run(decide)
        result = self.finish(self.start(pg_dsn, schema, side, trace_id, "barrier-resume"))
        assert "completed" == result["status"] and result["waited"] is False
        assert APPROVED == result["state"]["approve"] and result["state"]["sent"] is True


def test_trio_is_refused_with_a_checkpoint_error() -> None:
    """On trio (psycopg's async connections need asyncio) the first call says so, as a
    CheckpointError, before anything connects."""

    async def use() -> None:
        store = gx.PostgresStore("postgresql://nobody@127.0.0.1:1/none")
        with pytest.raises(CheckpointError, match="asyncio only"):
            await store.runs()
        await store.aclose()

    anyio.run(use, backend="trio")


async def test_open_store_takes_postgres_urls(pg_dsn: str) -> None:
    """open_store opens a PostgresStore for postgresql://, postgres:// and
    postgresql+psycopg:// URLs, with ?schema= naming its schema; the stores see one another's
    runs."""
    from psycopg.conninfo import conninfo_to_dict

    from graphexec.checkpoint import open_store

    info = conninfo_to_dict(pg_dsn)
    schema = new_schema()
    base = f"{info.get('user', 'postgres')}@{info.get('host')}:{info.get('port')}/{info['dbname']}"
    urls = [f"{scheme}://{base}?schema={schema}" for scheme in ("postgresql", "postgres")]
    urls.append(f"postgresql+psycopg://{base}?connect_timeout=5&schema={schema}")
    stores = [open_store(url) for url in urls]
    try:
        assert all(isinstance(s, gx.PostgresStore) and s.schema == schema for s in stores)
        await stores[0].save([make_row("t1", 0, "base")], make_run("t1"))
        for store in stores[1:]:
            assert ["t1"] == [r.trace_id for r in await store.runs()]
    finally:
        for store in stores:
            await store.aclose()
