"""Checkpoint stores: the contract, the in-memory store, the SQLite and Postgres stores, and
``open_store(url)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import CheckpointStore
from ._memory import MemoryStore
from ._open import open_store
from ._record import CheckpointSummary, RunInfo, StoredCheckpoint, StoredDecision

__all__ = (
    "CheckpointStore",
    "CheckpointSummary",
    "MemoryStore",
    "PostgresStore",
    "RunInfo",
    "SQLiteStore",
    "StoredCheckpoint",
    "StoredDecision",
    "open_store",
)

if TYPE_CHECKING:
    from ._postgres import PostgresStore
    from ._sqlite import SQLiteStore


def __getattr__(name: str) -> Any:
    # SQLiteStore pulls in sqlite3: loaded when first asked for.
    if name == "SQLiteStore":
        from ._sqlite import SQLiteStore

        return SQLiteStore
    # PostgresStore needs the `postgres` extra (psycopg, psycopg-pool): loaded when asked for.
    if name == "PostgresStore":
        from ._postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
