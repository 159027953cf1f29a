"""The wire format: what a UI or server sends as JSON is made of objects, never arrays."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import pytest

import graphexec as gx

State = Mapping[str, Any]


async def ok(s: State) -> dict[str, Any]:
    return {"done": True}


async def boom(s: State) -> None:
    raise RuntimeError("upstream said no")


def one_node(fn: Any) -> gx.Graph:
    return gx.GraphBuilder("wire").node("a", fn).start("a").end("a").build()


class TestGraphResult:
    """GraphResult encodes to a JSON object; the error as {type, message, node}."""

    async def test_completed_result_is_an_object(self) -> None:
        """A completed result: its fields by name, the log lines as objects, error null."""
        result = await gx.GraphExecutor().execute(one_node(ok), trace_id="t-ok")
        wire = msgspec.json.decode(msgspec.json.encode(result))
        assert isinstance(wire, dict)
        assert (wire["trace_id"], wire["status"], wire["steps"], wire["error"], wire["turn"]) == (
            "t-ok",
            "completed",
            1,
            None,
            1,
        )
        assert wire["state"] == {"done": True}
        assert [set(line) for line in wire["execution_log"]] == [
            {"step", "node", "start", "end", "success", "attempt"}
        ]

    async def test_failed_result_carries_the_error_as_data(self) -> None:
        """A failed result encodes its error as {type, message, node}; the exception stays."""
        async with gx.GraphExecutor().execute_stream(one_node(boom), trace_id="t-bad") as run:
            async for _ in run:
                pass
        result = run.result
        assert isinstance(result.error, gx.NodeExecutionFailed)
        wire = msgspec.json.decode(msgspec.json.encode(result))
        assert wire["status"] == "failed"
        assert wire["error"]["type"] == "NodeExecutionFailed"
        assert wire["error"]["node"] == "a"
        assert "upstream said no" in wire["error"]["message"]
        back = msgspec.json.decode(msgspec.json.encode(result), type=gx.GraphResult)
        assert back.error_info == result.error_info
        assert back.error is None  # an exception never travels; its data does


@pytest.mark.parametrize(
    "decision",
    [gx.Approve(), gx.Reject("too risky"), gx.Edit({"amount": 10}), gx.Skip()],
)
def test_decisions_are_tagged_objects(decision: gx.Decision) -> None:
    """A decision on the wire is an object tagged by "type", and decodes back as itself."""
    wire = msgspec.json.encode(decision)
    data = msgspec.json.decode(wire)
    assert isinstance(data, dict) and data["type"] == type(decision).__struct_config__.tag
    assert msgspec.json.decode(wire, type=gx.Decision) == decision
