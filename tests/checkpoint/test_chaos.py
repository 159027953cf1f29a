"""The chaos suite, CI-sized: random SIGKILLs then resume, and a decoder fuzz.

Kills: real worker processes (``chaos_worker.py``) on real SQLite files, killed at random
points under four checkpoint policies, resumed in new processes; no committed step may be lost,
the final state must equal an uninterrupted run's, and no exception other than a graphexec error
may appear anywhere (``chaos.py`` counts). The damage cases (deleted rows, damaged columns,
random bit flips in the file) are in ``test_damage.py``; ``benches/chaos.py`` runs all of this
for longer.

Decoder fuzz: arbitrary bytes, with valid checksums so they reach the decoder, fed to
``decode_body``, ``decode_snapshot`` and a full ``restore``: only CheckpointError may come out.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphexec as gx
from graphexec._restore import restore
from graphexec.checkpoint._record import (
    RunInfo,
    StoredCheckpoint,
    decode_body,
    decode_snapshot,
)

import chaos  # isort: skip  (helper modules next to this file)
import damage  # isort: skip


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> chaos.Reference:
    return chaos.reference(tmp_path_factory.mktemp("chaos-ref"))


@pytest.mark.parametrize("config", chaos.CONFIGS)
def test_kills_then_resume_match_an_uninterrupted_run(
    config: str, expected: chaos.Reference, tmp_path: Path
) -> None:
    """Three traces per policy, one or two kills each."""
    tally = chaos.Tally()
    seeds = [chaos.CONFIGS.index(config) * 100 + i for i in range(3)]
    for seed in seeds:
        tally.add(chaos.trial(tmp_path, seed, config, kills=1 + seed % 2, expected=expected))
    assert tally.clean, tally.notes
    assert tally.kills == tally.survived
    assert tally.kills >= 1  # the kills are real: most land before the run ends


# -- decoder fuzz --------------------------------------------------------------------------------


def _row(trace: str, seq: int, body: bytes, snapshot: bytes | None = None) -> StoredCheckpoint:
    return StoredCheckpoint(
        trace_id=trace,
        seq=seq,
        kind="base" if snapshot is not None else "delta",
        step=seq,
        next_node=None,
        status="running",
        trigger="step",
        created_at=0.0,
        body=body,
        checksum=zlib.crc32(body),
        snapshot=snapshot,
        snapshot_checksum=None if snapshot is None else zlib.crc32(snapshot),
    )


_FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)


@_FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_into_the_decoders(data: bytes) -> None:
    row = _row("t", 1, data, data)
    for decode in (decode_body, decode_snapshot):
        try:
            decode(row)
        except gx.CheckpointError as exc:
            assert ("t", 1) == (exc.trace_id, exc.seq)


async def _real_chain() -> tuple[list[StoredCheckpoint], RunInfo]:
    store = gx.MemoryStore()
    ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
    await ex.execute(damage.chain("fuzz", 4), {"log": []}, trace_id="t")
    run = await store.get_run("t")
    assert run is not None
    return await store.load_chain("t"), run


def _mutations() -> st.SearchStrategy[tuple[int, str, int, int]]:
    # (row index, blob, byte offset, new byte): one byte of a real record replaced and its
    # checksum recomputed, so the decoders and the replay see well-formed-looking nonsense.
    return st.tuples(
        st.integers(0, 4),
        st.sampled_from(["body", "snapshot"]),
        st.integers(0, 10_000),
        st.integers(0, 255),
    )


@_FUZZ
@given(mutations=st.lists(_mutations(), min_size=1, max_size=3))
async def test_mutated_records_with_valid_checksums_restore_or_raise_checkpoint_error(
    mutations: list[tuple[int, str, int, int]],
) -> None:
    """The checksum is recomputed after the damage (a bug writing nonsense would do that): the
    decoders, the chain checks and the replay must still raise only graphexec errors."""
    rows, run = await _real_chain()
    for index, blob, offset, value in mutations:
        index %= len(rows)
        row = rows[index]
        data = row.body if blob == "body" else row.snapshot
        if data is None:
            continue
        damaged = bytearray(data)
        damaged[offset % len(damaged)] = value
        changed = bytes(damaged)
        if blob == "body":
            row = msgspec.structs.replace(row, body=changed, checksum=zlib.crc32(changed))
        else:
            row = msgspec.structs.replace(
                row, snapshot=changed, snapshot_checksum=zlib.crc32(changed)
            )
        rows[index] = row
    store = gx.MemoryStore()
    await store.save(rows, run)
    try:
        restored = await restore(store, "t")
    except gx.GraphError:
        return
    # Restored without complaint: a value changed inside a blob, not the structure. The
    # restored state is still built only from graphexec's own decoded types.
    msgspec.msgpack.encode(restored.state)
