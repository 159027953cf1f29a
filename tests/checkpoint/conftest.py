"""Fixtures for the checkpoint store tests: one ``store`` per store implementation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from graphexec.checkpoint import CheckpointStore, MemoryStore, SQLiteStore


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CheckpointStore]:
    """Every store the contract suite runs against, closed after the test."""
    s: CheckpointStore = (
        MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "x.db")
    )
    async with s:
        yield s
