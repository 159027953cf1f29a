"""Circuit breakers: one per (graph, node), shared by the runs of one executor.

``closed`` (calls go through) -> after ``failures`` consecutive failed attempts -> ``open``
(calls fail fast with CircuitOpen, for ``cooldown`` seconds) -> ``half_open`` (the next call is
a trial; others keep failing fast) -> ``closed`` on its success, ``open`` again on its failure.
Pure bookkeeping on an injected clock: the run loop asks before each attempt and reports its
outcome; every state change is returned so the caller can emit it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import msgspec

__all__ = ("Breaker", "BreakerState", "Breakers", "CircuitBreaker")

BreakerState: TypeAlias = Literal["closed", "open", "half_open"]


class CircuitBreaker(msgspec.Struct, frozen=True, kw_only=True):
    """``.node(..., breaker=gx.CircuitBreaker(failures=5, cooldown=30.0))``: after ``failures``
    consecutive failed attempts (across every run of the executor) the node fails fast for
    ``cooldown`` seconds, into its ``on_failure``; then one trial call decides whether it
    closes again."""

    failures: int = 5
    cooldown: float = 30.0

    def problems(self) -> list[str]:
        out = []
        if not isinstance(self.failures, int) or self.failures < 1:
            out.append(f"breaker failures must be an int >= 1, got {self.failures!r}")
        if not self.cooldown > 0:
            out.append(f"breaker cooldown must be > 0 seconds, got {self.cooldown!r}")
        return out


@dataclass
class Breaker:
    """The live state of one node's breaker (one executor, every run)."""

    config: CircuitBreaker
    state: BreakerState = "closed"
    consecutive: int = 0
    opened_at: float = 0.0
    trial: bool = False
    """A half-open trial call is in flight: other calls still fail fast."""

    @property
    def until(self) -> float:
        """When the current cool-down ends."""
        return self.opened_at + self.config.cooldown

    def admit(self, now: float) -> tuple[bool, BreakerState | None]:
        """May a call go through now? Returns (allowed, the new state if it changed)."""
        if self.state == "closed":
            return True, None
        if self.state == "open":
            if now < self.until:
                return False, None
            self.state = "half_open"
            self.trial = True
            return True, "half_open"
        if self.trial:
            return False, None
        self.trial = True
        return True, None

    def success(self) -> BreakerState | None:
        """A call succeeded; the new state if it changed."""
        self.consecutive = 0
        self.trial = False
        if self.state != "closed":
            self.state = "closed"
            return "closed"
        return None

    def failure(self, now: float) -> BreakerState | None:
        """A call failed; the new state if it changed."""
        self.consecutive += 1
        self.trial = False
        if self.state == "half_open" or (
            self.state == "closed" and self.consecutive >= self.config.failures
        ):
            self.state = "open"
            self.opened_at = now
            return "open"
        return None

    def release(self) -> None:
        """A trial call ended without an outcome (cancelled): let the next call try."""
        self.trial = False


@dataclass
class Breakers:
    """The breakers of one executor, by (graph name, node)."""

    by_node: dict[tuple[str, str], Breaker] = field(default_factory=dict)

    def get(self, graph: str, node: str, config: CircuitBreaker) -> Breaker:
        key = (graph, node)
        breaker = self.by_node.get(key)
        if breaker is None or breaker.config != config:
            breaker = self.by_node[key] = Breaker(config)
        return breaker
