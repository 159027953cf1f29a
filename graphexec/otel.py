"""OpenTelemetry spans for graphexec runs (the ``otel`` extra: ``pip install graphexec[otel]``).

Enabled explicitly, per executor::

    from graphexec.otel import OpenTelemetry

    ex = gx.GraphExecutor(store=..., telemetry=OpenTelemetry(tracer_provider=provider))

Importing this module imports ``opentelemetry-api``; ``import graphexec`` alone never does.

Spans: one per run segment (``graphexec.run <graph>``: one driver of the run in one process,
from ``execute``, ``execute_stream``, ``resume_from`` or ``fork`` to where it stops), and inside
it one per node attempt (``graphexec.node <node>``), per barrier step (``graphexec.barrier
<node>``, with ``graphexec.barrier.waiting`` and ``graphexec.barrier.resolved`` events), and per
parallel-branch or map-item attempt (``graphexec.branch <node>``, a child of its node's span).
The span of an attempt is current while the node runs, so spans the node's own code starts
(an HTTP client's, a model SDK's) are its children.

Across segments: the first traced segment's W3C ``traceparent`` is recorded in the run's
checkpoints; a later segment (a resume, in any process) is a child of that span, so a run is
one trace however often it stops; when the caller of ``resume_from`` has a current span of
another trace, the segment links to it. A fork starts its own trace, linked to its source's.
"""

from __future__ import annotations

from contextvars import Token

import anyio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._telemetry import AttributeValue, SegmentKind, SpanKind

__all__ = ("OpenTelemetry",)

_propagator = TraceContextTextMapPropagator()
_MAX_ERROR = 1000
"""Characters of an error message kept in ``graphexec.error`` (the exception event has it
whole)."""


def _traceparent(span: Span) -> str | None:
    """The W3C ``traceparent`` of ``span``; None if it has no valid context."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, trace.set_span_in_context(span))
    return carrier.get("traceparent")


def _parse(traceparent: str | None) -> SpanContext | None:
    """The span context a stored ``traceparent`` names; None when absent or malformed (a
    damaged or hand-written value: the segment then starts a trace of its own)."""
    if not isinstance(traceparent, str) or not traceparent:
        return None
    ctx = _propagator.extract({"traceparent": traceparent})
    sc = trace.get_current_span(ctx).get_span_context()
    return sc if sc.is_valid else None


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


def _cause(exc: BaseException) -> BaseException:
    """The node's own exception inside graphexec's wrapper (NodeExecutionFailed.cause)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class OpenTelemetry:
    """Spans for every run segment and node attempt of one executor.

    Args:
        tracer_provider: where spans go; default: the global one
            (``opentelemetry.trace.set_tracer_provider``), looked up when each span starts.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        from . import __version__

        self._tracer = trace.get_tracer("graphexec", __version__, tracer_provider=tracer_provider)

    def segment(
        self,
        *,
        trace_id: str,
        graph: str,
        graph_hash: str,
        kind: SegmentKind,
        step: int,
        stored_context: str | None,
        linked_context: str | None,
    ) -> _Segment:
        """Open the span of one run segment (see graphexec._telemetry.Telemetry)."""
        ambient = otel_context.get_current()
        caller = trace.get_current_span(ambient).get_span_context()
        stored = _parse(stored_context)
        links: list[Link] = []
        parent = ambient
        if stored is not None:
            # A later segment of a run: a child of its first segment, in the same trace. The
            # caller's span (an HTTP request that resumed it) is linked, not the parent.
            parent = trace.set_span_in_context(trace.NonRecordingSpan(stored), ambient)
            if caller.is_valid and caller.trace_id != stored.trace_id:
                links.append(Link(caller, {"graphexec.link": "caller"}))
        source = _parse(linked_context)
        if source is not None:
            links.append(Link(source, {"graphexec.link": "source"}))
        span = self._tracer.start_span(
            f"graphexec.run {graph}",
            context=parent,
            attributes={
                "graphexec.trace_id": trace_id,
                "graphexec.graph": graph,
                "graphexec.graph_hash": graph_hash,
                "graphexec.segment": kind,
                "graphexec.step": step,
            },
            links=links,
        )
        recorded = stored_context if stored is not None else _traceparent(span)
        return _Segment(self._tracer, span, trace_id, recorded)


class _Segment:
    """One run segment's span, current in the driver's task from ``begin`` to ``end``."""

    __slots__ = ("_run_span", "_token", "_trace_id", "_tracer", "trace_context")

    def __init__(
        self, tracer: trace.Tracer, span: Span, trace_id: str, trace_context: str | None
    ) -> None:
        self._tracer = tracer
        self._run_span = span
        self._trace_id = trace_id
        self.trace_context = trace_context
        self._token: Token[Context] | None = None

    def begin(self) -> None:
        self._token = otel_context.attach(trace.set_span_in_context(self._run_span))

    def span(
        self,
        kind: SpanKind,
        node: str,
        step: int,
        span_id: str,
        *,
        attempt: int = 1,
        branch: str | None = None,
        barrier_id: str | None = None,
    ) -> _Scope:
        attributes: dict[str, AttributeValue] = {
            "graphexec.trace_id": self._trace_id,
            "graphexec.node": node,
            "graphexec.step": step,
            "graphexec.span_id": span_id,
        }
        if kind != "barrier":
            attributes["graphexec.attempt"] = attempt
        if branch is not None:
            attributes["graphexec.branch"] = branch
        if barrier_id is not None:
            attributes["graphexec.barrier_id"] = barrier_id
        return _Scope(self._tracer, f"graphexec.{kind} {node}", attributes)

    def event(self, name: str, attributes: dict[str, AttributeValue]) -> None:
        trace.get_current_span().add_event(name, attributes)

    def end(
        self,
        status: str,
        steps: int,
        error: BaseException | None,
        next_node: str | None,
        barrier_id: str | None,
    ) -> None:
        span = self._run_span
        span.set_attribute("graphexec.status", status)
        span.set_attribute("graphexec.steps", steps)
        if next_node is not None:
            span.set_attribute("graphexec.next_node", next_node)
        if barrier_id is not None:
            span.set_attribute("graphexec.barrier_id", barrier_id)
        if status == "failed":
            _failed(span, error)
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None
        span.end()


class _Scope:
    """A child span, current while its ``with`` block runs (a class, not a generator: one is
    entered per node attempt)."""

    __slots__ = ("_attributes", "_name", "_span", "_token", "_tracer")

    def __init__(
        self, tracer: trace.Tracer, name: str, attributes: dict[str, AttributeValue]
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._attributes = attributes
        self._token: Token[Context] | None = None

    def __enter__(self) -> Span:
        span = self._span = self._tracer.start_span(self._name, attributes=self._attributes)
        # A span without a valid context (a no-op provider) has nothing to hand to children.
        if span.get_span_context().is_valid:
            self._token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        span = self._span
        if self._token is not None:
            otel_context.detach(self._token)
        if exc is None:
            span.set_attribute("graphexec.status", "ok")
        elif isinstance(exc, anyio.get_cancelled_exc_class()):
            span.set_attribute("graphexec.status", "cancelled")
        else:
            _failed(span, exc)
        span.end()


def _failed(span: Span, exc: BaseException | None) -> None:
    """Mark ``span`` failed with ``exc`` (recorded as an exception event)."""
    if exc is None:
        span.set_status(Status(StatusCode.ERROR, "failed"))
        return
    node = getattr(exc, "node", None)
    if isinstance(node, str):
        span.set_attribute("graphexec.error.node", node)
    span.set_attribute("graphexec.status", "failed")
    span.set_attribute("graphexec.error", _error_text(exc))
    span.set_attribute("error.type", type(_cause(exc)).__qualname__)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, _error_text(exc)))
