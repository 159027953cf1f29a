"""A process for test_otel.py: ``python otel_worker.py <db> <trace_id>``.

Resumes the trace (waiting at the barrier ``approve`` of :func:`graph`, whose decision the test
submitted through the store) with its own TracerProvider and in-memory exporter, and prints
``SPANS <json>``: one object per finished span (name, trace id, span id, parent span id, links,
attributes, event names, status).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import graphexec as gx
from graphexec.otel import OpenTelemetry


def graph() -> gx.Graph:
    async def draft(state: Any) -> dict[str, Any]:
        return {"draft": "refund 10"}

    async def send(state: Any) -> dict[str, Any]:
        return {"sent": True}

    return (
        gx.GraphBuilder("otel-approval")
        .node("draft", draft)
        .barrier("approve")
        .node("send", send)
        .edge("draft", "approve")
        .edge("approve", "send")
        .start("draft")
        .end("send")
        .build()
    )


def span_dicts(exporter: InMemorySpanExporter) -> list[dict[str, Any]]:
    """The finished spans as plain data."""
    out = []
    for s in exporter.get_finished_spans():
        assert s.context is not None
        out.append(
            {
                "name": s.name,
                "trace_id": s.context.trace_id,
                "span_id": s.context.span_id,
                "parent": s.parent.span_id if s.parent is not None else None,
                "links": [[link.context.trace_id, link.context.span_id] for link in s.links],
                "attributes": dict(s.attributes or {}),
                "events": [e.name for e in s.events],
                "status": s.status.status_code.name,
            }
        )
    return out


async def main(db: str, trace_id: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with gx.SQLiteStore(db) as store:
        ex = gx.GraphExecutor(store=store, telemetry=OpenTelemetry(provider))
        async with ex.resume_from(graph(), trace_id) as run:
            async for _event in run:
                pass
        assert run.result is not None and run.result.status == "completed", run.result
    print("SPANS " + json.dumps(span_dicts(exporter)), flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
