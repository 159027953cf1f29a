"""The long chaos run: SIGKILLs, damaged files and fuzzed records, counted.

    python benches/chaos.py --kills 1000 --seconds 1800

Three parts, sharing the time and reported in one table:

- kills: traces of the chaos graph (``tests/checkpoint/chaos_worker.py``: a loop with fan-outs,
  a barrier answered through the store, 2 KiB payloads) under four checkpoint policies (sync,
  async, frequent compaction, adaptive), each killed with SIGKILL one to three times at random
  points and resumed in a new process; counts kills survived, committed steps lost, final
  states that differ from an uninterrupted run's, and foreign exceptions (anything but a
  graphexec error, in a worker or in the reader);
- bit flips: one random bit flipped in a real SQLite file holding three traces; every trace
  must load exactly as written or raise a graphexec error;
- fuzz: random bytes (with valid checksums) into the record decoders.

Every count but kills, trials and survived must be 0; the exit status is 1 otherwise. Stops
after ``--kills`` kills or ``--seconds`` seconds, whichever comes first (the bit flips and the
fuzz take a tenth of the time each).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import zlib
from pathlib import Path

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "checkpoint"))

import chaos
import damage

import graphexec as gx
from graphexec.checkpoint._record import StoredCheckpoint, decode_body, decode_snapshot


def kills(folder: Path, limit: int, seconds: float, seed: int) -> chaos.Tally:
    expected = chaos.reference(folder)
    tally = chaos.Tally()
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    n = 0
    while tally.kills < limit and time.monotonic() < deadline:
        config = chaos.CONFIGS[n % len(chaos.CONFIGS)]
        tally.add(chaos.trial(folder, seed * 1_000_000 + n, config, rng.randint(1, 3), expected))
        n += 1
        for leftover in folder.glob(f"chaos-{seed * 1_000_000 + n - 1}.db*"):
            leftover.unlink()
    return tally


def flips(folder: Path, seconds: float, seed: int) -> tuple[int, chaos.Tally]:
    clean = folder / "flips-clean.db"
    expected = anyio.run(damage.build, clean)
    data = clean.read_bytes()
    nonzero = [i for i, b in enumerate(data) if b]
    rng = random.Random(seed)
    tally = chaos.Tally()
    trials = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        damaged = bytearray(data)
        offset = rng.choice(nonzero) if trials % 2 else rng.randrange(len(data))
        damaged[offset] ^= 1 << rng.randrange(8)
        path = folder / "flip.db"
        path.write_bytes(bytes(damaged))
        try:
            anyio.run(damage.outcome, path, expected)
        except AssertionError as exc:
            tally.wrong_states += 1
            tally.notes.append(f"flip at {offset}: {exc}")
        except Exception as exc:  # noqa: BLE001 - counted
            tally.foreign += 1
            tally.notes.append(f"flip at {offset}: {exc!r}")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        trials += 1
    return trials, tally


def fuzz(seconds: float, seed: int) -> tuple[int, chaos.Tally]:
    rng = random.Random(seed)
    tally = chaos.Tally()
    trials = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = rng.randbytes(rng.randrange(0, 400))
        row = StoredCheckpoint(
            trace_id="t",
            seq=1,
            kind="base",
            step=1,
            next_node=None,
            status="running",
            trigger="step",
            created_at=0.0,
            body=data,
            checksum=zlib.crc32(data),
            snapshot=data,
            snapshot_checksum=zlib.crc32(data),
        )
        for decode in (decode_body, decode_snapshot):
            try:
                decode(row)
            except gx.GraphError:
                pass
            except Exception as exc:  # noqa: BLE001 - counted
                tally.foreign += 1
                tally.notes.append(f"{decode.__name__}({data!r:.80}): {exc!r}")
        trials += 1
    return trials, tally


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kills", type=int, default=200, help="stop after this many kills")
    p.add_argument("--seconds", type=float, default=300.0, help="stop after this long")
    p.add_argument("--seed", type=int, default=int(time.time()) % 10_000)
    args = p.parse_args()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gx-chaos-") as tmp:
        folder = Path(tmp)
        k = kills(folder, args.kills, args.seconds * 0.8, args.seed)
        flip_trials, f = flips(folder, args.seconds * 0.1, args.seed)
        fuzz_trials, z = fuzz(args.seconds * 0.1, args.seed)
    rows = [
        ("traces killed and resumed", k.trials, ""),
        ("kills", k.kills, ""),
        ("kills survived", k.survived, f"of {k.kills}"),
        ("committed steps lost", k.steps_lost, "must be 0"),
        ("wrong states after kills", k.wrong_states, "must be 0"),
        ("runs failed after kills", k.failed_runs, "must be 0"),
        ("foreign exceptions (kills)", k.foreign, "must be 0"),
        ("bit-flip trials", flip_trials, "3 traces each"),
        ("wrong states (bit flips)", f.wrong_states, "must be 0"),
        ("foreign exceptions (bit flips)", f.foreign, "must be 0"),
        ("decoder fuzz inputs", fuzz_trials, ""),
        ("foreign exceptions (fuzz)", z.foreign, "must be 0"),
    ]
    print(f"graphexec chaos, seed {args.seed}, {time.monotonic() - t0:.0f} s, pid {os.getpid()}")
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>7}  {note}")
    notes = k.notes + f.notes + z.notes
    for note in notes[:20]:
        print("  !", note)
    bad = k.survived != k.kills or not (k.clean and f.clean and z.clean)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
