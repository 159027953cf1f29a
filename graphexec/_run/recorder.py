"""The recorder: what a run tells the outside while it runs (events to the consumer, the
execution log, log lines), for the loop and the fan-out alike.

Every method returns at once when no one listens (no consumer stream, no execution log), so an
``execute()`` without a stream pays no event construction. The fan-out code takes a Recorder,
not the driver: the loop and the branches share this one narrow surface.
"""

from __future__ import annotations

import time
from typing import Any

from .._directives import Overwrite
from .._emit import Emitter
from .._events import (
    CircuitChanged,
    ErrorInfo,
    GraphEvent,
    LogEntry,
    NodeEnd,
    NodeRetry,
    NodeStart,
    ObservedError,
    StateChanged,
)
from .._log import get_logger
from .._telemetry import RunSegment

__all__ = ("Recorder", "error_info")


def error_info(exc: BaseException, node: str | None) -> ErrorInfo:
    """An exception as event data."""
    return ErrorInfo(type=type(exc).__name__, message=str(exc), node=node)


class Recorder:
    """Events, execution-log lines and log lines of one run."""

    __slots__ = ("emitter", "entries", "log", "reducers", "tel", "trace_id", "wall")

    def __init__(
        self,
        trace_id: str,
        graph_name: str,
        emitter: Emitter | None,
        *,
        keep_log: bool,
        reducers: dict[str, str] | None = None,
    ) -> None:
        self.trace_id = trace_id
        self.emitter = emitter
        """The consumer's stream; None for execute() (then no event is built)."""
        self.entries: list[LogEntry] | None = [] if keep_log else None
        self.log = get_logger(trace_id=trace_id, graph=graph_name)
        self.tel: RunSegment | None = None
        """The run segment's spans (telemetry); None: none, and no span is started."""
        self.reducers = reducers or {}
        """Each key's reducer by name, for StateChanged (keys not listed are overwritten)."""
        self.wall = time.time() - time.perf_counter()
        """Added to a ``perf_counter`` reading: wall-clock time for the execution log (one
        offset per run, so durations stay monotonic and a line costs no extra clock call)."""

    async def send(self, event: GraphEvent) -> None:
        """Deliver a built event (callers build it only under ``if rec.emitter``)."""
        if self.emitter is not None:
            await self.emitter.send(event)

    async def node_start(self, step: int, node: str, span: str, kind: str) -> None:
        if self.emitter is not None:
            await self.emitter.send(
                NodeStart(trace_id=self.trace_id, step=step, node=node, span_id=span, kind=kind)
            )

    async def node_end(
        self, node: str, step: int, span: str, t0: float, *, ok: bool, next_node: str | None
    ) -> float:
        """Close a node execution: its execution-log line and its NodeEnd; returns the end time."""
        t1 = self.log_line(node, step, t0, ok=ok)
        if self.emitter is not None:
            await self.send_end(node, step, span, t1 - t0, ok=ok, next_node=next_node)
        return t1

    def log_line(self, node: str, step: int, t0: float, *, ok: bool, attempt: int = 1) -> float:
        """The execution-log line of a node execution that ends now; returns the end time.
        (node_end without the event: the loop's hot path awaits send_end only if listened to.)"""
        t1 = time.perf_counter()
        if self.entries is not None:
            wall = self.wall
            self.entries.append(
                LogEntry(step, node, t0 + wall, t1 + wall, ok)
                if attempt == 1
                else LogEntry(step, node, t0 + wall, t1 + wall, ok, attempt)
            )
        return t1

    async def retry(
        self,
        step: int,
        node: str,
        span: str,
        attempt: int,
        exc: BaseException,
        wait: float,
        branch: str | None = None,
    ) -> None:
        """An attempt failed and will be retried: a log line and a NodeRetry event."""
        self.log.warning(
            "node attempt failed; retrying",
            node=node,
            step=step,
            span_id=span,
            branch=branch,
            attempt=attempt,
            wait=wait,
            error=f"{type(exc).__name__}: {exc}",
        )
        if self.tel is not None:
            attrs: dict[str, str | int | float | bool] = {
                "graphexec.node": node,
                "graphexec.step": step,
                "graphexec.attempt": attempt,
                "graphexec.retry.wait": wait,
                "error.type": type(exc).__qualname__,
            }
            if branch is not None:
                attrs["graphexec.branch"] = branch
            self.tel.event("graphexec.retry", attrs)
        if self.emitter is not None:
            await self.emitter.send(
                NodeRetry(
                    trace_id=self.trace_id,
                    step=step,
                    node=node,
                    span_id=span,
                    attempt=attempt,
                    error=error_info(exc, node),
                    wait=wait,
                    branch=branch,
                )
            )

    def circuit(self, step: int, node: str, state: str, failures: int, until: float | None) -> None:
        """A breaker changed state: a log line, and a CircuitChanged event (sent without
        waiting: the change may happen inside a branch)."""
        log = self.log.warning if state == "open" else self.log.info
        log("circuit breaker " + state.replace("_", "-"), node=node, step=step, failures=failures)
        if self.emitter is not None:
            self.emitter.send_soon(
                CircuitChanged(
                    trace_id=self.trace_id,
                    step=step,
                    node=node,
                    state=state,  # type: ignore[arg-type]
                    failures=failures,
                    until=until,
                )
            )

    async def send_end(
        self, node: str, step: int, span: str, duration: float, *, ok: bool, next_node: str | None
    ) -> None:
        """The NodeEnd event (callers check ``emitter`` first)."""
        if self.emitter is not None:
            await self.emitter.send(
                NodeEnd(
                    trace_id=self.trace_id,
                    step=step,
                    node=node,
                    span_id=span,
                    ok=ok,
                    duration=duration,
                    next_node=next_node,
                )
            )

    async def state_changed(
        self, step: int, node: str, span: str, changes: list[tuple[str, Any]]
    ) -> None:
        emitter = self.emitter
        if emitter is not None:
            reducers = self.reducers
            for k, v in changes:
                await emitter.send(
                    StateChanged(
                        trace_id=self.trace_id,
                        step=step,
                        node=node,
                        span_id=span,
                        key=k,
                        delta=v,
                        reducer="overwrite"
                        if type(v) is Overwrite
                        else reducers.get(k, "overwrite"),
                    )
                )

    async def observed(
        self, step: int, node: str, span: str, error: ErrorInfo, branch: str | None = None
    ) -> None:
        """An error the run survived (a fallback taken, a branch failure under ``continue``)."""
        if self.emitter is not None:
            await self.emitter.send(
                ObservedError(
                    trace_id=self.trace_id,
                    step=step,
                    node=node,
                    span_id=span,
                    error=error,
                    branch=branch,
                )
            )
