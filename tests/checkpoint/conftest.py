"""Fixtures for the checkpoint tests: one ``store`` per store implementation, and ``stores`` (a
store plus ways to reach its data as another process would) for the executor-level tests.

The contract suite runs against every entry of :data:`STORE_FACTORIES`, a registry of store
factories: a user's own store proves itself the same way, by registering a factory here (or in
a conftest of their own that imports test_store_contract's tests).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest

import graphexec as gx
from graphexec.checkpoint import CheckpointStore, MemoryStore, SQLiteStore

from _postgres_kit import database, pgbouncer  # isort: skip  (helper modules next to this file)
from _resume_kit import Stores  # isort: skip

StoreFactory = Callable[[pytest.FixtureRequest, Path], Awaitable[CheckpointStore]]
"""Builds a fresh, empty store for one test (``request`` reaches session fixtures)."""


def _postgres(dsn_fixture: str) -> StoreFactory:
    async def factory(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointStore:
        if request.getfixturevalue("anyio_backend") != "asyncio":
            pytest.skip("PostgresStore runs on asyncio only (psycopg's async connections)")
        dsn = request.getfixturevalue(dsn_fixture)  # skips when no server (or no pgbouncer)
        # A fresh schema per store: every test starts from an empty, newly migrated store.
        return gx.PostgresStore(dsn, schema=f"t_{uuid.uuid4().hex[:16]}", max_size=4)

    return factory


def _sqlite(commit_path: Literal["fast", "portable"]) -> StoreFactory:
    async def factory(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointStore:
        s = SQLiteStore(tmp_path / "x.db", commit_path=commit_path)
        await s.runs()  # open it now, to check the path it runs on
        assert s.commit_path_used == commit_path
        return s

    return factory


async def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointStore:
    return MemoryStore()


STORE_FACTORIES: dict[str, StoreFactory] = {
    "memory": _memory,
    # SQLiteStore once per commit path (on the event loop's thread when it can, and always on
    # a worker thread).
    "sqlite-fast": _sqlite("fast"),
    "sqlite-portable": _sqlite("portable"),
    "postgres": _postgres("pg_dsn"),
    "postgres-pgbouncer": _postgres("pgbouncer_dsn"),
}
"""Every store the contract suite runs against, by name."""


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A database of its own for this session on the test server (see _postgres_kit)."""
    yield from database()


@pytest.fixture(scope="session")
def pgbouncer_dsn(pg_dsn: str) -> Iterator[str]:
    """The session's database reached through a PgBouncer in transaction mode."""
    yield from pgbouncer(pg_dsn)


@pytest.fixture(params=list(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CheckpointStore]:
    """Every store the contract suite runs against, closed after the test."""
    s = await STORE_FACTORIES[request.param](request, tmp_path)
    async with s:
        yield s


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    """Each store kind; every store object opened by the test is closed after it."""
    path = tmp_path / "runs.db"
    opener: Callable[[], gx.CheckpointStore] | None = None
    if request.param == "postgres":
        dsn, schema = request.getfixturevalue("pg_dsn"), f"t_{uuid.uuid4().hex[:16]}"

        def opener() -> gx.CheckpointStore:
            return gx.PostgresStore(dsn, schema=schema, max_size=4)

        store = opener()
    else:
        store = gx.MemoryStore() if request.param == "memory" else gx.SQLiteStore(path)
    box = Stores(request.param, path, store, [store], opener)
    try:
        yield box
    finally:
        for s in box.opened:
            await s.aclose()


@pytest.fixture
def anyio_backend() -> str:
    """Checkpoint tests run on asyncio, to keep the suite short; the store contract and the
    SQLiteStore tests run on trio too (their modules widen this back to both backends; the
    Postgres stores skip trio: psycopg's async connections are asyncio only)."""
    return "asyncio"
