"""Fixtures for the checkpoint store tests: one ``store`` per store implementation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from graphexec.checkpoint import CheckpointStore, MemoryStore, SQLiteStore


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
