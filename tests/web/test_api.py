"""The HTTP API of ``gx.web.create_app``: a real uvicorn server on a free port, a real SQLite
file, httpx as the client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from _web_kit import ChatServer, free_port, read_events, served  # isort: skip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphexec as gx

pytest.importorskip("starlette")


async def slow_tokens(state: dict[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
    for word in ("one", " two", " three"):
        await ctx.emit({"token": word})
    return {"said": "one two three"}


async def done(state: dict[str, Any]) -> dict[str, Any]:
    return {"done": True}


GRAPH = (
    gx.GraphBuilder("talk")
    .node("speak", slow_tokens)
    .barrier("approve", prompt=lambda s: {"text": "go on?"})
    .node("finish", done)
    .edge("speak", "approve")
    .edge("approve", "finish")
    .start("speak")
    .end("finish")
    .build()
)


@pytest.fixture
async def ex(tmp_path: Path) -> AsyncIterator[gx.GraphExecutor]:
    async with gx.GraphExecutor(store=gx.SQLiteStore(tmp_path / "runs.db"), graphs=[GRAPH]) as ex:
        yield ex


@pytest.fixture
async def client(ex: gx.GraphExecutor) -> AsyncIterator[httpx.AsyncClient]:
    async with served(ex) as url, httpx.AsyncClient(base_url=url, timeout=20) as c:
        yield c


async def start_waiting(client: httpx.AsyncClient, trace_id: str) -> list[dict[str, Any]]:
    """Start a run and read its events until it waits at its barrier."""
    r = await client.post("/runs", json={"input": {"q": 1}, "trace_id": trace_id})
    assert 202 == r.status_code, r.text
    assert trace_id == r.json()["trace_id"]
    return await read_events(client, f"/runs/{trace_id}/events", until="BarrierWaiting")


async def test_start_stream_approve_complete(client: httpx.AsyncClient) -> None:
    """A run started over HTTP streams its events, waits, and completes on a decision."""
    events = await start_waiting(client, "conv-1")
    assert ["one", " two", " three"] == [
        e["data"]["token"] for e in events if e["type"] == "Custom"
    ]
    state = (await client.get("/runs/conv-1")).json()
    assert "waiting" == state["status"]
    assert "approve#1" == state["pending_barrier"]["barrier_id"]
    assert {"text": "go on?"} == state["pending_barrier"]["prompt"]

    r = await client.post(
        "/runs/conv-1/decisions", json={"barrier_id": "approve#1", "decision": {"type": "approve"}}
    )
    assert 202 == r.status_code, r.text
    rest = await read_events(client, "/runs/conv-1/events", last_event_id=events[-1]["event_id"])
    assert "BarrierResolved" in [e["type"] for e in rest]
    assert "GraphComplete" == rest[-1]["type"]
    ids = [e["event_id"] for e in events + rest]
    assert sorted(set(ids)) == ids  # increasing, no duplicate across the reconnect
    final = (await client.get("/runs/conv-1")).json()
    assert "completed" == final["status"]
    assert final["state"]["done"] is True

    runs = (await client.get("/runs")).json()
    assert ["conv-1"] == [r["trace_id"] for r in runs]
    assert [] == (await client.get("/runs", params={"status": "waiting"})).json()


async def test_conversation_turns(client: httpx.AsyncClient) -> None:
    """POST /runs on a finished trace starts its next turn; on an unfinished one it is a 409
    RunExists that says the run's status. One stream follows every turn."""
    first = await start_waiting(client, "chat")
    r = await client.post("/runs", json={"input": {"q": 2}, "trace_id": "chat"})
    assert 409 == r.status_code, r.text
    assert "RunExists" == r.json()["error"]["type"]
    assert "waiting" == r.json()["error"]["status"]

    await client.post(
        "/runs/chat/decisions", json={"barrier_id": "approve#1", "decision": {"type": "approve"}}
    )
    await read_events(client, "/runs/chat/events", until="GraphComplete")
    r = await client.post("/runs", json={"input": {"q": 3}, "trace_id": "chat"})
    assert 202 == r.status_code, r.text
    second = await read_events(
        client, "/runs/chat/events", last_event_id=first[-1]["event_id"], until="BarrierWaiting"
    )
    starts = [e for e in second if e["type"] == "GraphStart"]
    assert [(2, {"q": 3})] == [(e["turn"], e["input"]) for e in starts]
    assert "approve#2" == second[-1]["barrier_id"]
    state = (await client.get("/runs/chat")).json()
    assert (2, "approve#2") == (state["turn"], state["pending_barrier"]["barrier_id"])


async def test_events_headers(client: httpx.AsyncClient) -> None:
    """The stream is text/event-stream, uncached and unbuffered by proxies; frames carry ids."""
    await start_waiting(client, "h")
    async with client.stream("GET", "/runs/h/events") as r:
        assert "text/event-stream" in r.headers["content-type"]
        assert "no" == r.headers["x-accel-buffering"]
        assert "no-cache" in r.headers["cache-control"]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
async def test_last_event_id_no_gap_no_duplicate(
    client: httpx.AsyncClient, data: st.DataObject
) -> None:
    """Reconnecting after any event id gives exactly the events after it."""
    if (await client.get("/runs/split")).status_code == 404:
        await start_waiting(client, "split")
        await client.post(
            "/runs/split/decisions",
            json={"barrier_id": "approve#1", "decision": {"type": "approve"}},
        )
    every = await read_events(client, "/runs/split/events")
    assert "GraphComplete" == every[-1]["type"]
    k = data.draw(st.integers(0, len(every) - 1), label="reconnect after event #")
    rest = await read_events(client, "/runs/split/events", last_event_id=every[k]["event_id"])
    assert every[k + 1 :] == rest
    by_query = await read_events(client, f"/runs/split/events?after={every[k]['event_id']}")
    assert every[k + 1 :] == by_query


async def test_reject_and_edit_decisions(client: httpx.AsyncClient) -> None:
    """Reject and Edit go through as JSON decisions; the state records them."""
    await start_waiting(client, "rej")
    r = await client.post(
        "/runs/rej/decisions",
        json={"barrier_id": "approve#1", "decision": {"type": "reject", "reason": "no"}},
    )
    assert 202 == r.status_code, r.text
    await read_events(client, "/runs/rej/events", until="GraphComplete")
    state = (await client.get("/runs/rej")).json()["state"]
    assert {"decision": "reject", "reason": "no", "by": "human"} == state["approve"]

    await start_waiting(client, "ed")
    r = await client.post(
        "/runs/ed/decisions",
        json={"barrier_id": "approve#1", "decision": {"type": "edit", "update": {"q": 2}}},
    )
    assert 202 == r.status_code, r.text
    await read_events(client, "/runs/ed/events", until="GraphComplete")
    state = (await client.get("/runs/ed")).json()["state"]
    assert 2 == state["q"]
    assert "approve" == state["approve"]["decision"]


async def test_cancel_a_waiting_run(client: httpx.AsyncClient) -> None:
    """POST /cancel ends a waiting run as cancelled; its stream ends with GraphFailed."""
    events = await start_waiting(client, "c")
    r = await client.post("/runs/c/cancel")
    assert 202 == r.status_code, r.text
    rest = await read_events(client, "/runs/c/events", last_event_id=events[-1]["event_id"])
    assert "GraphFailed" == rest[-1]["type"]
    assert "cancelled" == rest[-1]["status"]
    assert "cancelled" == (await client.get("/runs/c")).json()["status"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("GET", "/runs/nope", None, 404, "RunNotFound"),
        ("GET", "/runs/nope/events", None, 404, "RunNotFound"),
        ("POST", "/runs", {"graph": "other"}, 404, "GraphNotFound"),
        ("POST", "/runs", {"input": 3}, 400, "BadRequest"),
        ("POST", "/runs", {"inputs": {}}, 400, "BadRequest"),
        ("POST", "/runs/w/decisions", {"barrier_id": "approve#1"}, 400, "BadRequest"),
        (
            "POST",
            "/runs/w/decisions",
            {"barrier_id": "approve#1", "decision": {"type": "maybe"}},
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/runs/w/decisions",
            {"barrier_id": "speak#1", "decision": {"type": "approve"}},
            422,
            "InvalidDecision",
        ),
        ("GET", "/nowhere", None, 404, "NotFound"),
        ("DELETE", "/runs", None, 405, "MethodNotAllowed"),
    ],
)
async def test_errors_are_json_with_status(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: Any,
    status: int,
    error: str,
) -> None:
    """Every error is {"error": {"type", "message"}} with the status that says what is wrong."""
    if (await client.get("/runs/w")).status_code == 404:
        await start_waiting(client, "w")
    r = await client.request(method, path, json=body)
    assert status == r.status_code, r.text
    assert error == r.json()["error"]["type"]
    assert r.json()["error"]["message"]


async def test_body_that_is_not_json(client: httpx.AsyncClient) -> None:
    """A body that is not JSON is a 400 that says so."""
    r = await client.post("/runs", content=b"{nope", headers={"content-type": "application/json"})
    assert 400 == r.status_code
    assert "not JSON" in r.json()["error"]["message"]


async def test_bad_last_event_id(client: httpx.AsyncClient) -> None:
    """A Last-Event-ID that is not an event id is a 400 naming it."""
    await start_waiting(client, "bad")
    r = await client.get("/runs/bad/events", headers={"Last-Event-ID": "x1"})
    assert 400 == r.status_code
    assert "'x1'" in r.json()["error"]["message"]


async def test_bearer_token(ex: gx.GraphExecutor) -> None:
    """With a token, the API needs it (header, or ?token= for EventSource); the page does not."""
    async with served(ex, token="s3cret") as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.get("/runs")
        assert 401 == r.status_code
        assert "Unauthorized" == r.json()["error"]["type"]
        assert 401 == (await c.get("/runs", headers={"Authorization": "Bearer wrong"})).status_code
        assert 200 == (await c.get("/runs", headers={"Authorization": "Bearer s3cret"})).status_code
        assert 200 == (await c.get("/runs?token=s3cret")).status_code
        page = await c.get("/")
        assert 200 == page.status_code
        assert "graphexec chat" in page.text
        assert 200 == (await c.get("/static/app.js")).status_code


async def test_store_required() -> None:
    """create_app refuses an executor without a store, saying why."""
    from graphexec.web import create_app

    with pytest.raises(gx.StoreRequired, match="store"):
        create_app(gx.GraphExecutor(graphs=[GRAPH]))


async def test_no_gap_no_duplicate_across_a_server_kill(tmp_path: Path) -> None:
    """A client that reconnects with Last-Event-ID to a server restarted after SIGKILL gets the
    rest of the run: every event once, ids increasing, nothing missing."""
    server = ChatServer(tmp_path / "chat.db", free_port())
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as c:
            r = await c.post("/runs", json={"input": {"message": "Paris?"}, "trace_id": "k"})
            assert 202 == r.status_code, r.text
            before = await read_events(c, "/runs/k/events", until="BarrierWaiting")
            server.kill()
            server.start()
            r = await c.post(
                "/runs/k/decisions",
                json={"barrier_id": "approve#1", "decision": {"type": "approve"}},
            )
            assert 202 == r.status_code, r.text
            after = await read_events(
                c, "/runs/k/events", last_event_id=before[-1]["event_id"], until="GraphComplete"
            )
            every = await read_events(c, "/runs/k/events", until="GraphComplete")
    finally:
        server.stop()
    last = before[-1]["event_id"]
    ids = [e["event_id"] for e in every]
    assert sorted(set(ids)) == ids
    assert [e for e in every if e["event_id"] > last] == after
    # What the killed server had recorded is what the first client saw (it may have streamed
    # its last events before the flush that would have recorded them).
    assert [e for e in every if e["event_id"] <= last] == before[: len(ids) - len(after)]
    text = "".join(e["data"]["token"] for e in after if e["type"] == "Custom")
    assert "The weather in Paris is sunny, 21°C." == text


async def test_sigterm_interrupts_and_a_restart_recovers(tmp_path: Path) -> None:
    """SIGTERM stops the server cleanly: a run mid-node is checkpointed "interrupted"; the next
    server recovers it at start and finishes it once approved."""
    server = ChatServer(tmp_path / "chat.db", free_port(), token_delay=0.1)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as c:
            r = await c.post("/runs", json={"input": {"message": "Tokyo?"}, "trace_id": "t"})
            assert 202 == r.status_code, r.text
            first = await read_events(c, "/runs/t/events", until="Custom")
            assert server.proc is not None
            server.proc.terminate()
            assert 0 == server.proc.wait(20)
            server.proc = None
            async with gx.GraphExecutor(store=gx.SQLiteStore(server.db)) as ex:
                assert "interrupted" == (await ex.get_state("t")).status

            server.start()
            rest = await read_events(
                c, "/runs/t/events", last_event_id=first[-1]["event_id"], until="BarrierWaiting"
            )
            assert "GraphInterrupted" in [e["type"] for e in rest]
            r = await c.post(
                "/runs/t/decisions",
                json={"barrier_id": "approve#1", "decision": {"type": "approve"}},
            )
            assert 202 == r.status_code, r.text
            tail = await read_events(c, "/runs/t/events", last_event_id=rest[-1]["event_id"])
    finally:
        server.stop()
    assert "GraphComplete" == tail[-1]["type"]
    ids = [e["event_id"] for e in first + rest + tail]
    assert sorted(set(ids)) == ids
    text = "".join(e["data"]["token"] for e in tail if e["type"] == "Custom")
    assert "The weather in Tokyo is cloudy, 18°C." == text


async def test_serve_claims_a_queued_run_on_its_work_hint(tmp_path: Path) -> None:
    """`serve()` recovers at every "work" hint, not only every ``recover_interval``: a run
    queued on its store (a decision, a handed-back run alike) is driven at once, here with an
    interval far longer than the test may take."""
    import os
    import signal

    from graphexec.web import serve

    store = gx.SQLiteStore(tmp_path / "runs.db")
    ready = anyio.Event()
    async with anyio.create_task_group() as tg:

        async def serving() -> None:
            await serve(
                [GRAPH],
                store=store,
                port=0,
                recover_interval=3600,
                on_ready=lambda url: ready.set(),
            )

        tg.start_soon(serving)
        with anyio.fail_after(20):
            await ready.wait()
            queuer = gx.GraphExecutor(store=store)
            await queuer.start(GRAPH, {"q": 1}, trace_id="queued-1", queue=True)
            await _reaches(queuer, "queued-1", "waiting")
            await store.submit_decision("queued-1", "approve#1", gx.Approve())
            await _reaches(queuer, "queued-1", "completed")
            os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler: a graceful stop
    assert (await gx.GraphExecutor(store=store).get_state("queued-1")).state["done"] is True


async def _reaches(ex: gx.GraphExecutor, trace_id: str, status: str) -> None:
    """Poll the store until the run has ``status`` (the caller's fail_after bounds it)."""
    for _ in range(100_000):
        if (await ex.get_state(trace_id)).status == status:
            return
        await anyio.sleep(0.02)
