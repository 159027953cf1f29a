"""The retry policy and the circuit breaker on their own, without running a graph."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import graphexec as gx
from graphexec._breaker import Breaker


class _Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class RequestsConnectionError(OSError):
    """Shaped like ``requests.ConnectionError`` (RequestException subclasses OSError)."""


class RequestsHTTPError(OSError):
    """Shaped like ``requests.HTTPError``: an OSError carrying the response."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.response = _Response(status)


class SDKStatusError(Exception):
    """Shaped like an API SDK's status error (``openai.APIStatusError``): ``status_code``."""

    def __init__(self, status: int) -> None:
        super().__init__(f"status {status}")
        self.status_code = status


class SDKConnectionError(Exception):
    """An SDK's own transport error, subclassing nothing from the standard library."""


CLASSIFIED: list[tuple[BaseException, bool]] = [
    (ConnectionError("reset"), True),
    (TimeoutError(), True),
    (OSError("io"), True),
    (RequestsConnectionError("refused"), True),  # LangGraph's filter never retried these
    (RequestsHTTPError(503), True),
    (RequestsHTTPError(429), True),
    (RequestsHTTPError(408), True),
    (RequestsHTTPError(404), False),
    (RequestsHTTPError(401), False),
    (SDKStatusError(500), True),
    (SDKStatusError(400), False),
    (SDKConnectionError("down"), True),
    (RuntimeError("flaky"), True),
    (gx.RetryAfter(3), True),
    (gx.NodeTimeout("slow", node="n", timeout=1.0, attempt=1), True),
    (gx.NonRetryable("bad input"), False),
    (ValueError("bad"), False),
    (TypeError("bad"), False),
    (KeyError("k"), False),
    (AttributeError("a"), False),
    (ZeroDivisionError(), False),
    (NotImplementedError(), False),
    (AssertionError(), False),
    (gx.StateError("conflict"), False),
]


@pytest.mark.parametrize(("exc", "retried"), CLASSIFIED, ids=lambda v: repr(v)[:40])
def test_default_filter_classifies_as_documented(exc: BaseException, retried: bool) -> None:
    """Retry(on=None) retries transient errors (OSError included) and never programming errors,
    4xx statuses but 408/425/429, graphexec's own errors but NodeTimeout, or NonRetryable."""
    assert retried == gx.Retry().retries(exc)


def test_on_types_and_predicates_never_override_non_retryable() -> None:
    """on= narrows the filter to its types or its predicate; NonRetryable is never retried."""
    by_type = gx.Retry(on=(KeyError,))
    assert by_type.retries(KeyError("k"))
    assert not by_type.retries(ConnectionError())
    by_predicate = gx.Retry(on=lambda e: "again" in str(e))
    assert by_predicate.retries(ValueError("try again"))
    assert not by_predicate.retries(ValueError("never"))
    assert not gx.Retry(on=(Exception,)).retries(gx.NonRetryable("no"))
    assert not gx.Retry(on=lambda e: True).retries(gx.NonRetryable("no"))


def test_waits_grow_by_factor_up_to_max_backoff() -> None:
    """Without jitter the wait after the n-th failure is backoff * factor**(n-1), capped."""
    policy = gx.Retry(attempts=8, backoff=0.5, factor=2.0, max_backoff=5.0, jitter=False)
    assert [0.5, 1.0, 2.0, 4.0, 5.0, 5.0] == [policy.wait(n) for n in range(1, 7)]


@given(
    failed=st.integers(min_value=1, max_value=30),
    backoff=st.floats(min_value=0.0, max_value=10.0),
    factor=st.floats(min_value=1.0, max_value=4.0),
    extra=st.floats(min_value=0.0, max_value=100.0),
    r=st.floats(min_value=0.0, max_value=1.0),
)
def test_jittered_wait_lies_in_the_upper_half(
    failed: int, backoff: float, factor: float, extra: float, r: float
) -> None:
    """With jitter the wait is drawn from [base/2, base], base the unjittered wait."""
    policy = gx.Retry(backoff=backoff, factor=factor, max_backoff=backoff + extra)
    base = gx.Retry(backoff=backoff, factor=factor, max_backoff=backoff + extra, jitter=False).wait(
        failed
    )
    wait = policy.wait(failed, rand=lambda: r)
    assert base / 2 - 1e-9 <= wait <= base + 1e-9


def test_retry_after_replaces_the_backoff_within_max_backoff() -> None:
    """gx.RetryAfter(seconds) sets the wait, bounded by max_backoff."""
    policy = gx.Retry(backoff=0.5, max_backoff=10.0)
    assert 7.0 == policy.wait(1, gx.RetryAfter(7))
    assert 10.0 == policy.wait(1, gx.RetryAfter(3600))


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({"attempts": 0}, "attempts must be an int >= 1"),
        ({"backoff": -1.0}, "backoff must be >= 0"),
        ({"factor": 0.5}, "factor must be >= 1"),
        ({"backoff": 5.0, "max_backoff": 1.0}, "max_backoff (1.0) must be >= backoff (5.0)"),
        ({"on": ("nope",)}, "on= must be a tuple of exception types or a predicate"),
    ],
)
def test_impossible_numbers_are_problems(kw: dict[str, Any], problem: str) -> None:
    """Retry.problems() names each impossible setting (build() reports them per node)."""
    assert any(problem in p for p in gx.Retry(**kw).problems())


class TestBreaker:
    def test_opens_after_consecutive_failures_and_fails_fast_during_the_cooldown(self) -> None:
        """N consecutive failures open it; until the cool-down ends nothing is admitted."""
        b = Breaker(gx.CircuitBreaker(failures=3, cooldown=10.0))
        assert (None, None) == (b.failure(0.0), b.failure(1.0))
        assert b.success() is None  # a success resets the count
        assert [None, None, "open"] == [b.failure(t) for t in (2.0, 3.0, 4.0)]
        assert (False, None) == b.admit(13.9)

    def test_half_open_admits_one_trial_whose_outcome_decides(self) -> None:
        """After the cool-down one trial call goes through; others still fail fast; success
        closes the breaker, failure opens it for another cool-down."""
        b = Breaker(gx.CircuitBreaker(failures=1, cooldown=10.0))
        assert "open" == b.failure(0.0)
        assert (True, "half_open") == b.admit(10.0)
        assert (False, None) == b.admit(10.5)
        assert "open" == b.failure(11.0)
        assert (False, None) == b.admit(20.9)
        assert (True, "half_open") == b.admit(21.0)
        assert "closed" == b.success()
        assert (True, None) == b.admit(21.5)

    def test_a_cancelled_trial_lets_the_next_call_try(self) -> None:
        """A trial that ended without an outcome does not leave the breaker stuck."""
        b = Breaker(gx.CircuitBreaker(failures=1, cooldown=1.0))
        b.failure(0.0)
        assert (True, "half_open") == b.admit(1.0)
        b.release()
        assert (True, None) == b.admit(1.1)

    @pytest.mark.parametrize(
        ("kw", "problem"),
        [({"failures": 0}, "failures must be an int >= 1"), ({"cooldown": 0.0}, "cooldown")],
    )
    def test_impossible_numbers_are_problems(self, kw: dict[str, Any], problem: str) -> None:
        """CircuitBreaker.problems() names each impossible setting."""
        assert any(problem in p for p in gx.CircuitBreaker(**kw).problems())
