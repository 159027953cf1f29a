"""Damaged checkpoint files: a CheckpointError naming the trace and seq, never a wrong state.

Real SQLite files, damaged the ways files get damaged: rows deleted, columns rewritten to the
wrong type or to bytes that do not decode, the runs index out of step with the records, and
random bit flips anywhere in the file. Every trace of the file either loads exactly as it was
written or raises a graphexec error; traces the damage does not touch still load.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphexec as gx
from graphexec.checkpoint import MemoryStore, SQLiteStore
from graphexec.checkpoint._record import StoredCheckpoint

import damage  # isort: skip  (a helper module next to this file)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, damage.Expected]:
    """One clean file with three traces, and what each loads as."""
    path = tmp_path_factory.mktemp("damage") / "clean.db"
    expected = anyio.run(damage.build, path)
    return path, expected


def copy_of(sample: tuple[Path, damage.Expected], tmp_path: Path) -> Path:
    path = tmp_path / "copy.db"
    shutil.copyfile(sample[0], path)
    return path


def sql(path: Path, *statements: str) -> None:
    """Damage the file with raw SQL, as a hand edit or a buggy tool would."""
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


async def load_error(path: Path, trace: str) -> gx.CheckpointError:
    async with SQLiteStore(path) as store:
        with pytest.raises(gx.CheckpointError) as info:
            await gx.GraphExecutor(store=store).get_state(trace)
    return info.value


class TestMissingRows:
    async def test_deleted_middle_row_is_a_gap_not_a_shorter_log(
        self, sample: tuple[Path, damage.Expected], tmp_path: Path
    ) -> None:
        """Deleting seq 3 used to restore {'log': [0, 2, 3, ...]}: now the gap is named."""
        path = copy_of(sample, tmp_path)
        # alpha is one base (seq 1) and nine deltas
        sql(path, "DELETE FROM checkpoints WHERE trace_id = 'alpha' AND seq = 3")
        err = await load_error(path, "alpha")
        assert (err.trace_id, err.seq) == ("alpha", 3)
        assert "seq 3 is missing" in str(err)
        assert await damage.outcome(path, sample[1]) == {
            "alpha": "error",
            "beta": "ok",
            "gamma": "ok",
        }

    async def test_deleted_last_rows_do_not_load_an_older_position(
        self, sample: tuple[Path, damage.Expected], tmp_path: Path
    ) -> None:
        """Rows missing at the end (a damaged index hides them the same way) would load the run
        as running at an older seq; the runs index row says otherwise."""
        path = copy_of(sample, tmp_path)
        last = (
            sqlite3.connect(path)
            .execute("SELECT last_seq FROM runs WHERE trace_id = 'alpha'")
            .fetchone()[0]
        )
        sql(path, f"DELETE FROM checkpoints WHERE trace_id = 'alpha' AND seq >= {last - 1}")
        err = await load_error(path, "alpha")
        assert err.trace_id == "alpha"
        assert "does not match the runs index" in str(err)
        assert "last seq" in str(err) and "status 'completed'" in str(err)

    async def test_runs_row_disagreeing_with_the_records(
        self, sample: tuple[Path, damage.Expected], tmp_path: Path
    ) -> None:
        """A runs row whose status or step differs from the last record is damage."""
        path = copy_of(sample, tmp_path)
        sql(path, "UPDATE runs SET status = 'running', step = 2 WHERE trace_id = 'alpha'")
        err = await load_error(path, "alpha")
        assert "status 'running' in the runs index, 'completed' in the checkpoint" in str(err)

    async def test_missing_runs_row(
        self, sample: tuple[Path, damage.Expected], tmp_path: Path
    ) -> None:
        path = copy_of(sample, tmp_path)
        sql(path, "DELETE FROM runs WHERE trace_id = 'beta'")
        err = await load_error(path, "beta")
        assert "no runs index row" in str(err)

    async def test_deleted_base_with_a_runs_row(
        self, sample: tuple[Path, damage.Expected], tmp_path: Path
    ) -> None:
        path = copy_of(sample, tmp_path)
        sql(path, "DELETE FROM checkpoints WHERE trace_id = 'gamma' AND kind = 'base'")
        err = await load_error(path, "gamma")
        assert "no base record" in str(err)

    async def test_fork_from_a_seq_behind_a_gap(
        self, sample: tuple[Path, damage.Expected], tmp_path: Path
    ) -> None:
        """Restoring an older seq checks the chain up to that seq too."""
        path = copy_of(sample, tmp_path)
        sql(path, "DELETE FROM checkpoints WHERE trace_id = 'alpha' AND seq = 2")
        async with SQLiteStore(path) as store:
            ex = gx.GraphExecutor(store=store)
            with pytest.raises(gx.CheckpointError, match="seq 2 is missing"):
                async with ex.fork(damage.chain("long", 9), "alpha", 3):
                    pass


class TestDamagedColumns:
    @pytest.mark.parametrize(
        ("statement", "says"),
        [
            # beta's latest chain: the base at seq 4, the delta at seq 5
            ("UPDATE checkpoints SET body = CAST(body AS TEXT) WHERE seq = 5", "UTF-8"),
            ("UPDATE checkpoints SET body = 12 WHERE seq = 5", "holds int"),
            ("UPDATE checkpoints SET checksum = 'x' WHERE seq = 5", "holds bytes/str"),
            (
                "UPDATE checkpoints SET body = CAST(X'C1C1' || body AS BLOB) WHERE seq = 5",
                "checksum",
            ),
            ("UPDATE checkpoints SET snapshot = 'text' WHERE seq = 4", "snapshot is damaged"),
            ("UPDATE checkpoints SET seq = 'five' WHERE seq = 5", "missing"),
            ("UPDATE runs SET barrier_counts = '{oops'", "damaged"),
            ("UPDATE runs SET status = CAST(X'FF80' AS TEXT)", "UTF-8"),
        ],
    )
    async def test_a_column_of_the_wrong_type_or_bytes(
        self,
        sample: tuple[Path, damage.Expected],
        tmp_path: Path,
        statement: str,
        says: str,
    ) -> None:
        """Text that is not UTF-8, JSON that does not parse, a blob turned integer: each is a
        CheckpointError, never UnicodeDecodeError, msgspec.DecodeError or TypeError."""
        path = copy_of(sample, tmp_path)
        sql(
            path,
            statement.replace("WHERE", "WHERE trace_id = 'beta' AND")
            if "WHERE" in statement
            else statement + " WHERE trace_id = 'beta'",
        )
        err = await load_error(path, "beta")
        assert says in str(err)
        assert err.trace_id == "beta"
        # the other traces are untouched
        assert (await damage.outcome(path, sample[1]))["alpha"] == "ok"

    async def test_damaged_decision_row(
        self, sample: tuple[Path, damage.Expected], tmp_path: Path
    ) -> None:
        path = copy_of(sample, tmp_path)
        async with SQLiteStore(path) as store:
            await store.submit_decision("gamma", "approve#1", gx.Approve())
        sql(path, "UPDATE decisions SET decision = X'C1'")
        async with SQLiteStore(path) as store:
            # A decision that cannot be read is handed to the run as such (decision None, the
            # reason in error): the run skips and reports it, it never fails on it
            # (test_decision_paths.py).
            (found,) = await store.decisions_after("gamma", 0)
            assert found.decision is None and found.error is not None
            assert "DecodeError" in found.error

    async def test_not_a_database(self, tmp_path: Path) -> None:
        """File-level damage names the file."""
        path = tmp_path / "junk.db"
        path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
        async with SQLiteStore(path) as store:
            with pytest.raises(gx.CheckpointError, match="junk.db"):
                await gx.GraphExecutor(store=store).get_state("t")


class _PrefixStore(MemoryStore):
    """A store whose load_chain loses the last rows, as a damaged index does."""

    async def load_chain(self, trace_id: str, seq: int | None = None) -> list[StoredCheckpoint]:
        rows: Sequence[StoredCheckpoint] = await super().load_chain(trace_id, seq)
        return list(rows[:-2]) if seq is None else list(rows)


async def test_chain_shorter_than_the_runs_index_in_any_store() -> None:
    """The cross-check lives in restore, so every store gets it."""
    store = _PrefixStore()
    ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
    await ex.execute(damage.chain("c", 6), {"log": []}, trace_id="t")
    with pytest.raises(gx.CheckpointError, match="does not match the runs index") as info:
        await ex.get_state("t")
    assert info.value.trace_id == "t"


# -- random bit flips ----------------------------------------------------------------------------


def _offsets(data: bytes) -> st.SearchStrategy[int]:
    # Half the flips land on non-zero bytes: most of a small file is empty page space, where a
    # flip changes nothing and proves little.
    nonzero = [i for i, b in enumerate(data) if b]
    return st.one_of(st.integers(0, len(data) - 1), st.sampled_from(nonzero))


def test_random_bit_flips_never_give_a_wrong_state_or_a_foreign_error(
    sample: tuple[Path, damage.Expected], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Flip one bit anywhere in a real file: every trace loads exactly, or raises a graphexec
    error (outcome() asserts both)."""
    data = sample[0].read_bytes()
    folder = tmp_path_factory.mktemp("flips")
    counter = iter(range(10**9))

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        database=None,
    )
    @given(offset=_offsets(data), bit=st.integers(0, 7))
    def flip(offset: int, bit: int) -> None:
        damaged = bytearray(data)
        damaged[offset] ^= 1 << bit
        path = folder / f"flip{next(counter)}.db"
        path.write_bytes(bytes(damaged))
        found = anyio.run(damage.outcome, path, sample[1])
        assert set(found.values()) <= {"ok", "error"}

    flip()
