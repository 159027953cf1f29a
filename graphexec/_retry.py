"""Retry policy: which errors are retried, how long to wait before the next attempt, and the
clock the waits are measured on. Pure and testable without running a graph; the run loop
(``_run/attempts.py``) applies it around each node attempt.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Protocol, TypeAlias

import anyio
import msgspec

from .exceptions import GraphError, NodeTimeout, NonRetryable, RetryAfter

__all__ = ("Clock", "Retry", "RetryFilter", "SystemClock", "default_retry_filter")

RetryFilter: TypeAlias = tuple[type[BaseException], ...] | Callable[[BaseException], bool]
"""``Retry(on=...)``: exception types to retry, or a predicate on the exception."""

# Programming errors: the same call fails the same way again, so retrying only burns budget.
# Deliberately not OSError (LangGraph's filter skips OSError, and so never retries `requests`
# errors, which subclass it) and not RuntimeError (many SDKs raise it for transient faults).
_PERMANENT: tuple[type[BaseException], ...] = (
    TypeError,
    ValueError,
    AttributeError,
    NameError,
    LookupError,
    AssertionError,
    NotImplementedError,
    ArithmeticError,
    ImportError,
    SyntaxError,
    RecursionError,
)
# HTTP statuses that say "try again": request timeout, too early, too many requests, 5xx.
_RETRY_STATUS = frozenset({408, 425, 429})


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status an error carries (requests, httpx, most API SDKs), if any."""
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    return status if isinstance(status, int) and 100 <= status <= 599 else None


def default_retry_filter(exc: BaseException) -> bool:
    """The filter of ``Retry(on=None)``.

    Never: ``gx.NonRetryable``, graphexec's own errors (but ``NodeTimeout``), an HTTP error
    whose status is a 4xx other than 408/425/429, and programming errors (``TypeError``,
    ``ValueError``, ``AttributeError``, ``NameError``, ``LookupError``, ``AssertionError``,
    ``NotImplementedError``, ``ArithmeticError``, ``ImportError``, ``SyntaxError``,
    ``RecursionError``). Always: ``gx.RetryAfter``, ``NodeTimeout``, an HTTP error with a
    status of 408, 425, 429 or 5xx. Anything else (``OSError`` and so ``ConnectionError``,
    ``TimeoutError`` and ``requests``' errors; httpx's transport errors; ``RuntimeError``; an
    SDK's own error classes) is retried: an unknown error is more often a flaky dependency
    than a bug, and the attempt budget bounds the cost of being wrong.
    """
    if isinstance(exc, NonRetryable):
        return False
    if isinstance(exc, RetryAfter | NodeTimeout):
        return True
    if isinstance(exc, GraphError):
        return False
    status = _http_status(exc)
    if status is not None:
        return status in _RETRY_STATUS or status >= 500
    return not isinstance(exc, _PERMANENT)


class Retry(msgspec.Struct, frozen=True, kw_only=True):
    """How often a node is called before its failure counts, and the waits in between.

    ``attempts`` counts every call, the first included (``attempts=1``: no retry). The wait
    before attempt *n+1* is ``backoff * factor ** (n - 1)``, at most ``max_backoff``; with
    ``jitter`` it is drawn uniformly from the upper half of that (so waits never collapse to
    zero, and concurrent runs spread out). A node raising ``gx.RetryAfter(seconds)`` waits
    that long instead (still bounded by ``max_backoff``). ``on``: the exception types to
    retry, or a predicate; None uses :func:`default_retry_filter`. ``gx.NonRetryable`` is
    never retried, whatever ``on`` says.

    Examples::

        gx.Retry(attempts=3)                                  # 0.5 s, then 1 s
        gx.Retry(attempts=5, backoff=1.0, max_backoff=10.0, jitter=False)
        gx.Retry(attempts=4, on=(httpx.TransportError, TimeoutError))
    """

    attempts: int = 3
    backoff: float = 0.5
    factor: float = 2.0
    max_backoff: float = 30.0
    jitter: bool = True
    on: RetryFilter | None = None

    def problems(self) -> list[str]:
        """What is impossible about these numbers (empty when nothing is)."""
        out = []
        if not isinstance(self.attempts, int) or self.attempts < 1:
            out.append(f"attempts must be an int >= 1, got {self.attempts!r}")
        if not self.backoff >= 0:
            out.append(f"backoff must be >= 0 seconds, got {self.backoff!r}")
        if not self.factor >= 1:
            out.append(f"factor must be >= 1, got {self.factor!r}")
        if not self.max_backoff >= self.backoff:
            out.append(f"max_backoff ({self.max_backoff!r}) must be >= backoff ({self.backoff!r})")
        on = self.on
        if (
            on is not None
            and not callable(on)
            and not (
                isinstance(on, tuple)
                and all(isinstance(t, type) and issubclass(t, BaseException) for t in on)
            )
        ):
            out.append("on= must be a tuple of exception types or a predicate")
        return out

    def retries(self, exc: BaseException) -> bool:
        """Whether ``exc`` may be retried (the budget aside)."""
        if isinstance(exc, NonRetryable):
            return False
        on = self.on
        if on is None:
            return default_retry_filter(exc)
        if isinstance(on, tuple):
            return isinstance(exc, on)
        return bool(on(exc))

    def wait(
        self,
        failed: int,
        exc: BaseException | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait after the ``failed``-th failed attempt (1 for the first)."""
        if isinstance(exc, RetryAfter):
            return min(max(exc.seconds, 0.0), self.max_backoff)
        base = min(self.backoff * self.factor ** (failed - 1), self.max_backoff)
        if self.jitter:
            return base / 2 + rand() * base / 2
        return base


class Clock(Protocol):
    """Wall-clock time and sleeping, injectable (``GraphExecutor(clock=...)``) so tests of
    backoffs and cool-downs need not wait: ``gx.testing.FakeClock``."""

    def now(self) -> float:
        """Seconds since the epoch (waits are checkpointed: they outlive the process)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (cancellable)."""
        ...


class SystemClock:
    """The real clock: ``time.time()`` and ``anyio.sleep``."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)
