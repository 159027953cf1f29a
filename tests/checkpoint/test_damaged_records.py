"""Damaged checkpoint records: every damage surfaces as a graphexec error naming trace and seq.

Store-independent behaviour runs on MemoryStore and SQLiteStore (the ``stores`` fixture in
conftest.py); "another process" is a second SQLiteStore on the same file (MemoryStore: the same
object), and "a restart" closes the SQLiteStore and opens a new one on the same path. Shared
graphs and helpers: ``_resume_kit.py``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

import graphexec as gx

from _resume_kit import (  # isort: skip
    PAD,
    approval,
    APPROVED,
    consume,
    leave_at_barrier,
)


class TestDamagedRecords:
    """A damaged checkpoint is a CheckpointError naming the trace and the seq."""

    @pytest.mark.parametrize("damage", ["body", "snapshot"])
    async def test_damaged_row(self, tmp_path: Path, damage: str) -> None:
        """Flip body bytes or truncate a snapshot: get_state/resume_from fail; other traces work."""
        path = tmp_path / "runs.db"
        graph = approval()
        policy = gx.CheckpointPolicy(every_step=True)
        async with gx.SQLiteStore(path) as store:
            ex = gx.GraphExecutor(store=store, policy=policy)
            for trace_id in ("t-bad", "t-good"):
                await leave_at_barrier(ex, graph, trace_id, {"pad": PAD})

        with contextlib.closing(sqlite3.connect(path)) as db, db:
            if damage == "body":
                seq, blob = db.execute(
                    "SELECT seq, body FROM checkpoints WHERE trace_id = 't-bad' "
                    "ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                flipped = bytearray(blob)
                flipped[len(flipped) // 2] ^= 0xFF
                db.execute(
                    "UPDATE checkpoints SET body = ? WHERE trace_id = 't-bad' AND seq = ?",
                    (bytes(flipped), seq),
                )
            else:
                seq, blob = db.execute(
                    "SELECT seq, snapshot FROM checkpoints WHERE trace_id = 't-bad' "
                    "AND kind = 'base' ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                db.execute(
                    "UPDATE checkpoints SET snapshot = ? WHERE trace_id = 't-bad' AND seq = ?",
                    (blob[: len(blob) // 2], seq),
                )

        async with gx.SQLiteStore(path) as store:
            ex = gx.GraphExecutor(store=store, policy=policy)
            with pytest.raises(gx.CheckpointError) as got:
                await ex.get_state("t-bad")
            with pytest.raises(gx.CheckpointError) as resumed_bad:
                async with ex.resume_from(graph, "t-bad"):
                    pytest.fail("the checkpoint is damaged")  # pragma: no cover
            for exc in (got.value, resumed_bad.value):
                assert (exc.trace_id, exc.seq) == ("t-bad", seq)
                assert "'t-bad'" in str(exc)
                assert f"seq {seq}" in str(exc)
                assert "damaged" in str(exc)

            async with ex.resume_from(graph, "t-good") as resumed:
                await consume(resumed)
            assert resumed.result.state == {
                "pad": PAD,
                "draft": "hello",
                "approve": APPROVED,
                "sent": True,
            }
