"""When to checkpoint: CheckpointPolicy (the triggers) and CheckpointScore (adaptive)."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ("CheckpointPolicy", "CheckpointScore")


class CheckpointScore(msgspec.Struct, frozen=True):
    """Scores the work done since the last checkpoint; past ``threshold`` one is written.

    score = seconds of node time * ``per_second`` + reported token cost * ``per_token``.
    With the defaults a checkpoint follows about one second of node time, or 2,000 tokens
    reported with ``ctx.report(token_cost=...)``, whichever comes first. A node declared
    ``side_effects=True`` (or that reports ``side_effects=True``) is always followed by one when
    ``always_after_side_effects`` is set, so a resumed run does not repeat it.
    """

    threshold: float = 1.0
    per_second: float = 1.0
    per_token: float = 1 / 2000
    always_after_side_effects: bool = True

    def score(self, seconds: float, tokens: float) -> float:
        """The score of ``seconds`` of node time and ``tokens`` of reported cost."""
        return seconds * self.per_second + tokens * self.per_token


class CheckpointPolicy(msgspec.Struct, frozen=True):
    """Which moments write a checkpoint (with a store set on the executor).

    Defaults: ``adaptive``, ``on_barrier``, ``on_completion`` and ``on_explicit`` on,
    ``every_step`` off, ``durability="sync"``. The start of a run is always checkpointed, so a run
    can be found and resumed by its trace id from its first step on.

    ``durability="sync"``: the step waits for the commit. ``"async"``: commits happen behind the
    run; ``CheckpointSaved`` is still sent only after its commit, a ``BarrierWaiting`` only after
    the wait is committed, and everything is flushed before the run returns.

    ``compact_every``: a new base (whole state) is written after this many delta records, or
    sooner when the deltas since the base outweigh it.
    """

    every_step: bool = False
    on_barrier: bool = True
    on_completion: bool = True
    on_explicit: bool = True
    adaptive: bool = True
    durability: Literal["sync", "async"] = "sync"
    score: CheckpointScore = msgspec.field(default_factory=CheckpointScore)
    compact_every: int = 20

    def __post_init__(self) -> None:
        if self.durability not in ("sync", "async"):
            raise ValueError(f"durability must be 'sync' or 'async', got {self.durability!r}")
        if self.compact_every < 1:
            raise ValueError("compact_every must be >= 1")
