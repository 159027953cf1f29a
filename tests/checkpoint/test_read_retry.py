"""A waiting run's decision polls survive passing store errors, and still fail on lasting ones.

The store is a real SQLite file; the fault is injected in ``decisions_after`` the way SQLite
reports it (a CheckpointError caused by ``sqlite3.OperationalError``), and the decision is
submitted through a second store object on the same file, as another process would.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

import graphexec as gx
from graphexec.checkpoint import SQLiteStore, _retry
from graphexec.checkpoint._record import StoredDecision


class FlakyStore(SQLiteStore):
    """decisions_after fails ``failures`` times once the run waits, then works (or never)."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures
        self.calls = 0

    async def decisions_after(self, trace_id: str, cursor: int) -> list[StoredDecision]:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            try:
                raise sqlite3.OperationalError("disk I/O error")
            except sqlite3.OperationalError as exc:
                raise gx.CheckpointError(f"SQLite store: {exc}", trace_id=trace_id) from exc
        return await super().decisions_after(trace_id, cursor)


def gate() -> gx.Graph:
    async def done(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"done": True}

    return (
        gx.GraphBuilder("gate")
        .barrier("approve")
        .node("done", done)
        .edge("approve", "done")
        .start("approve")
        .end("done")
        .build()
    )


async def drive(store: SQLiteStore, path: Path) -> gx.Run:
    """Run to the barrier, submit the decision through another store object, finish."""
    ex = gx.GraphExecutor(store=store, decision_poll_interval=0.01)
    async with ex.execute_stream(gate(), {}, trace_id="t") as run:
        async for event in run:
            if isinstance(event, gx.BarrierWaiting):
                async with SQLiteStore(path) as other:
                    await other.submit_decision("t", event.barrier_id, gx.Approve())
    return run


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_retry, "READ_RETRY_WAITS", (0.01, 0.01, 0.01))


async def test_a_passing_read_error_is_retried(tmp_path: Path, quick_retries: None) -> None:
    path = tmp_path / "r.db"
    async with FlakyStore(path, failures=2) as store:
        with anyio.fail_after(10):
            run = await drive(store, path)
    assert "completed" == run.result.status
    assert {"approve": {"decision": "approve", "reason": None, "by": "human"}, "done": True} == (
        run.result.state
    )
    assert store.calls >= 3


async def test_a_lasting_read_error_fails_the_run_after_the_retries(
    tmp_path: Path, quick_retries: None
) -> None:
    """Not stuck waiting, and not failed at the first error: failed after four attempts."""
    path = tmp_path / "r.db"
    async with FlakyStore(path, failures=10**6) as store:
        with anyio.fail_after(10):
            run = await drive(store, path)
        assert "failed" == run.result.status
        assert isinstance(run.result.error, gx.CheckpointError)
        assert "disk I/O error" in str(run.result.error)
        assert store.calls == 4


async def test_permanent_errors_are_not_retried() -> None:
    class Gone(gx.MemoryStore):
        calls = 0

        async def decisions_after(self, trace_id: str, cursor: int) -> list[StoredDecision]:
            self.calls += 1
            raise gx.RunNotFound("gone", trace_id=trace_id)

    store = Gone()
    with pytest.raises(gx.RunNotFound):
        await _retry.decisions_after(store, "t", 0)
    assert 1 == store.calls


async def test_a_foreign_error_becomes_a_checkpoint_error(quick_retries: None) -> None:
    class Broken(gx.MemoryStore):
        async def decisions_after(self, trace_id: str, cursor: int) -> list[StoredDecision]:
            raise OSError("connection reset")

    with pytest.raises(gx.CheckpointError, match="connection reset") as caught:
        await _retry.decisions_after(Broken(), "t", 0)
    assert "t" == caught.value.trace_id
