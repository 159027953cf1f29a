"""Fixtures for the checkpoint tests: one ``store`` per store implementation, and ``stores`` (a
store plus ways to reach its data as another process would) for the executor-level tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import graphexec as gx
from graphexec.checkpoint import CheckpointStore, MemoryStore, SQLiteStore

from _resume_kit import Stores  # isort: skip  (a helper module next to this file)


@pytest.fixture(params=["memory", "sqlite-fast", "sqlite-portable"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CheckpointStore]:
    """Every store the contract suite runs against, closed after the test: SQLiteStore once per
    commit path (on the event loop's thread when it can, and always on a worker thread)."""
    s: CheckpointStore
    if request.param == "memory":
        s = MemoryStore()
    else:
        path = request.param.removeprefix("sqlite-")
        s = SQLiteStore(tmp_path / "x.db", commit_path=path)
        await s.runs()  # open it now, to check the path it runs on
        assert s.commit_path_used == path
    async with s:
        yield s


@pytest.fixture(params=["memory", "sqlite"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    """Each store kind; every store object opened by the test is closed after it."""
    path = tmp_path / "runs.db"
    store: gx.CheckpointStore = (
        gx.MemoryStore() if request.param == "memory" else gx.SQLiteStore(path)
    )
    box = Stores(request.param, path, store, [store])
    try:
        yield box
    finally:
        for s in box.opened:
            await s.aclose()


@pytest.fixture
def anyio_backend() -> str:
    """Checkpoint tests run on asyncio, to keep the suite short; the store contract and the
    SQLiteStore tests run on trio too (their modules widen this back to both backends)."""
    return "asyncio"
