"""How-to: trace runs with OpenTelemetry (docs/how-to/telemetry.md shows this file)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

# --8<-- [start:setup]
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import graphexec as gx
from graphexec.otel import OpenTelemetry

exporter = InMemorySpanExporter()  # in an app: an OTLP exporter behind a BatchSpanProcessor
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))

store = gx.SQLiteStore("traced.db")
ex = gx.GraphExecutor(
    store=store,
    telemetry=OpenTelemetry(tracer_provider=provider),  # None: the global provider
)
# --8<-- [end:setup]


async def draft(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"reply": f"Refund order {state['order']}?"}


async def send(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"sent": True}


graph = (
    gx.GraphBuilder("refund")
    .node("draft", draft)
    .barrier("approve")
    .node("send", send)
    .edge("draft", "approve")
    .edge("approve", "send")
    .start("draft")
    .end("send")
    .build()
)


async def main() -> None:
    # --8<-- [start:segments]
    # First segment: runs until the barrier waits, then the request ends.
    async with ex.execute_stream(graph, {"order": "A-17"}, trace_id="refund-1") as run:
        async for event in run:
            if isinstance(event, gx.BarrierWaiting):
                break

    # Later, maybe in another process: the decision arrives and the run is resumed.
    await store.submit_decision("refund-1", "approve#1", gx.Approve())
    async with ex.resume_from(graph, "refund-1") as run:
        async for _event in run:
            pass

    for span in exporter.get_finished_spans():
        attrs = span.attributes or {}
        kind = attrs.get("graphexec.segment", "")
        print(f"{span.name:26} {kind:7} {attrs.get('graphexec.status')}")
    print("traces:", {f"{s.context.trace_id:032x}" for s in exporter.get_finished_spans()})
    # --8<-- [end:segments]
    spans = exporter.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1  # one trace for the whole run
    assert run.result.status == "completed"


anyio.run(main)
