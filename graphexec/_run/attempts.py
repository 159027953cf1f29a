"""One attempt of a call under its node's resilience settings, and the retry loop of a branch.

``attempt_call`` runs one call: the node's circuit breaker admits it (or it fails fast with
CircuitOpen), ``timeout=`` and ``heartbeat_timeout=`` bound it (NodeTimeout), and its outcome
feeds the breaker. ``retry_branch`` retries one parallel branch or map item in place (its
attempts are not checkpointed: a failed fan-out keeps its successful branches instead). The
retry loop of a plain node, whose attempt count is checkpointed, is in ``step.py``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import anyio

from .._breaker import Breakers
from .._retry import Clock, SystemClock
from .._spec import NodeSpec
from ..exceptions import CircuitOpen, GraphError, NodeExecutionFailed, NodeTimeout
from .recorder import Recorder

__all__ = ("Resilience", "attempt_call", "cause_of", "error_record", "retry_branch")

T = TypeVar("T")
_MISSING: Any = object()


class Resilience:
    """What the runs of one executor share: the clock the waits use, and the breakers."""

    __slots__ = ("breakers", "clock", "rand")

    def __init__(self, clock: Clock | None = None, rand: Callable[[], float] | None = None) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.breakers = Breakers()
        self.rand: Callable[[], float] = rand if rand is not None else random.random


def cause_of(exc: BaseException) -> BaseException:
    """The user's exception inside a NodeExecutionFailed (what the retry filter judges)."""
    return exc.cause if isinstance(exc, NodeExecutionFailed) else exc


def error_record(exc: BaseException) -> dict[str, str]:
    """How a skipped failure is recorded in the state (under ``errors``)."""
    cause = cause_of(exc)
    return {"type": type(cause).__name__, "message": str(cause)}


async def attempt_call(
    res: Resilience,
    rec: Recorder,
    graph_name: str,
    spec: NodeSpec,
    step: int,
    attempt: int,
    call: Callable[[list[float] | None], Awaitable[T]],
) -> T:
    """Run ``call(beat)`` once under ``spec``'s breaker, timeout and heartbeat timeout.

    ``beat`` is the heartbeat cell to hand to the NodeContext (None without
    ``heartbeat_timeout``). Errors pass through; a timeout raises NodeTimeout.
    """
    breaker = None
    if spec.breaker is not None:
        breaker = res.breakers.get(graph_name, spec.name, spec.breaker)
        allowed, change = breaker.admit(res.clock.now())
        if change is not None:
            rec.circuit(step, spec.name, change, breaker.consecutive, None)
        if not allowed:
            raise CircuitOpen(
                f"node {spec.name!r} was not called: its circuit breaker is open after "
                f"{breaker.consecutive} consecutive failures",
                node=spec.name,
                until=breaker.until,
                step=step,
            )
    try:
        result = await _bounded(spec, attempt, step, call)
    except BaseException as exc:
        if breaker is not None:
            if isinstance(exc, Exception):
                change = breaker.failure(res.clock.now())
                if change is not None:
                    until = breaker.until if change == "open" else None
                    rec.circuit(step, spec.name, change, breaker.consecutive, until)
            else:
                breaker.release()
        raise
    if breaker is not None:
        change = breaker.success()
        if change is not None:
            rec.circuit(step, spec.name, change, 0, None)
    return result


async def _bounded(
    spec: NodeSpec, attempt: int, step: int, call: Callable[[list[float] | None], Awaitable[T]]
) -> T:
    timeout = spec.timeout
    idle = spec.heartbeat_timeout
    if timeout is None and idle is None:
        return await call(None)
    result: Any = _MISSING
    error: BaseException | None = None
    idle_fired = False
    with anyio.CancelScope() as scope:
        if timeout is not None:
            scope.deadline = anyio.current_time() + timeout
        if idle is None:
            result = await call(None)
        else:
            beat = [time.monotonic()]

            async def watchdog() -> None:
                nonlocal idle_fired
                # time.monotonic on both sides: a sync node beats from its worker thread.
                while True:
                    remaining = beat[0] + idle - time.monotonic()
                    if remaining <= 0:
                        idle_fired = True
                        scope.cancel()
                        return
                    await anyio.sleep(remaining)

            async with anyio.create_task_group() as tg:
                tg.start_soon(watchdog)
                try:
                    result = await call(beat)
                except Exception as exc:  # noqa: BLE001 - re-raised below, outside the group
                    error = exc
                tg.cancel_scope.cancel()
    if error is not None:
        raise error
    if result is _MISSING:
        if idle_fired:
            assert idle is not None
            raise NodeTimeout(
                f"node {spec.name!r} sent no heartbeat for {idle} s (heartbeat_timeout) in "
                f"attempt {attempt}",
                node=spec.name,
                timeout=idle,
                attempt=attempt,
                idle=True,
                step=step,
            )
        assert timeout is not None
        raise NodeTimeout(
            f"node {spec.name!r} did not finish attempt {attempt} within timeout={timeout} s",
            node=spec.name,
            timeout=timeout,
            attempt=attempt,
            step=step,
        )
    return result  # type: ignore[no-any-return]


async def retry_branch(
    res: Resilience,
    rec: Recorder,
    graph_name: str,
    spec: NodeSpec,
    step: int,
    span: str,
    branch: str,
    call: Callable[[int, list[float] | None], Awaitable[T]],
    failed: int = 0,
    retry_at: float | None = None,
    before_backoff: Callable[[int, float], Awaitable[None]] | None = None,
) -> T:
    """Call one branch (or map item) until it succeeds or its node's Retry gives up; raises
    the last error (a NodeTimeout or CircuitOpen, or what the branch raised).

    ``failed`` attempts were already made (a resumed fan-out), the next one due at
    ``retry_at``; ``before_backoff(attempt, retry_at)`` runs before each wait (the loop
    checkpoints the fan-out's progress there).
    """
    policy = spec.retry
    clock = res.clock
    attempt = failed + 1
    if retry_at is not None:
        wait = retry_at - clock.now()
        if wait > 0:
            await clock.sleep(wait)
    while True:
        try:
            if rec.tel is None:
                return await attempt_call(
                    res, rec, graph_name, spec, step, attempt, partial(call, attempt)
                )
            with rec.tel.span("branch", spec.name, step, span, attempt=attempt, branch=branch):
                return await attempt_call(
                    res, rec, graph_name, spec, step, attempt, partial(call, attempt)
                )
        except Exception as exc:
            cause = cause_of(exc)
            if (
                policy is None
                or attempt >= policy.attempts
                or isinstance(exc, CircuitOpen)
                or (isinstance(exc, GraphError) and not isinstance(exc, NodeTimeout))
                or not policy.retries(cause)
            ):
                raise
            wait = policy.wait(attempt, cause, res.rand)
            await rec.retry(step, spec.name, span, attempt, cause, wait, branch)
            if before_backoff is not None:
                await before_backoff(attempt, clock.now() + wait)
            await clock.sleep(wait)
            attempt += 1
