"""Checkpoint stores: the contract, the in-memory store and the SQLite store."""

from __future__ import annotations

from ._base import CheckpointStore
from ._memory import MemoryStore
from ._record import CheckpointSummary, RunInfo, StoredCheckpoint, StoredDecision
from ._sqlite import SQLiteStore

__all__ = (
    "CheckpointStore",
    "CheckpointSummary",
    "MemoryStore",
    "RunInfo",
    "SQLiteStore",
    "StoredCheckpoint",
    "StoredDecision",
)
